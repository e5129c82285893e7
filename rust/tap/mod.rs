//! Branches off the hub that are not outputs: they take what the route sends (or what one
//! input delivers) the way an output does, isolated from it, for a look at the pictures.
//! `decode.rs`: a decode branch for snapshots and frames.

pub mod decode;

pub use decode::{
    DecodeSettings, DecodeStats, Decoder, Picture, PictureFormat, IMAGE_FORMATS, RAW_FORMATS,
};
