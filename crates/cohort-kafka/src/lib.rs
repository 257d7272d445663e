//! rdkafka consumer and producer adapters for cohort.
