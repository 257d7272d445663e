//! The rules language: segments and offers from one YAML file, compiled once.

pub mod facts;

pub use facts::{CivilDate, Facts, FlagField, NumField, SetField, TextField, TimeField, Window};
