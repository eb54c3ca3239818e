//! YAML with positions (see the module doc of [`crate::compose`]).
