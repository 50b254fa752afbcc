//! Real-PostgreSQL test harness.
