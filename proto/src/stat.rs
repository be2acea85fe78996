//! Group and storage stat structures of the list commands (E.1–E.3).
