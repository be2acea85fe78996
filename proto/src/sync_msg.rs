//! Storage ↔ storage replication bodies (L.4) and tracker sync messages.
