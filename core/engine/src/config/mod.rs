//! Pipeline files: the YAML model ([`model`]), loading with environment interpolation and
//! located errors ([`load`]), and validation without I/O ([`validate`]).

pub mod load;
pub mod model;
pub mod upcast;
pub mod validate;

pub use load::{ConfigError, LoadedPipeline, load_path, load_paths};
pub use model::*;
pub use upcast::*;
