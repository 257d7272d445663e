//! cohort's customer state in RocksDB, committed atomically with consumed offsets.
