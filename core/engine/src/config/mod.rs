//! Pipeline files: the YAML model ([`model`]), loading with environment interpolation and
//! located errors ([`load`]), and validation without I/O ([`validate`]).

pub mod capture;
pub mod load;
pub mod model;
pub mod upcast;
pub mod validate;

pub use capture::CaptureFile;
pub use load::{ConfigError, Loaded, LoadedCapture, LoadedPipeline, load_path, load_paths};
pub use model::*;
pub use upcast::*;
