//! Realistic synthetic customer traffic for cohort's demo, tests and benchmarks.
