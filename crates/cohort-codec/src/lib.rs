//! Bytes to cohort events and back: Avro (plain and Confluent wire format) and JSON.
