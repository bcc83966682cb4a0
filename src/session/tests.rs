//! Session tests: written below.
