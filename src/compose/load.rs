//! The Compose model (see the module doc of [`crate::compose`]).
