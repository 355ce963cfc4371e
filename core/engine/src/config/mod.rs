//! Pipeline files: the YAML model ([`model`]; what events do to the read model in
//! [`events`]), loading with environment interpolation and
//! located errors ([`load`]), validation without I/O ([`validate`]), and the check of
//! rules against reader schema files ([`schema_check`]).

pub mod capture;
pub mod diff;
pub mod events;
pub mod load;
pub(crate) mod locate;
pub mod model;
pub mod reference;
pub mod routing;
pub mod schema;
pub mod schema_check;
pub mod upcast;
pub mod validate;

pub use capture::CaptureFile;
pub use events::*;
pub use load::{
    ConfigError, FileSet, Loaded, LoadedCapture, LoadedFile, LoadedPipeline, load_any_text,
    load_each, load_path, load_paths,
};
pub use model::*;
pub use routing::ConcreteTarget;
pub use upcast::*;
