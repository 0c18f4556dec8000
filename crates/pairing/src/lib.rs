//! BLS12-381 for Tally's BLS signatures and verifiably encrypted signatures
//! (`tally_kernel::crypto::bls`): scalars, G1 and G2 points, hashing to G1 and products of
//! pairings, computed by `blst` (the C and assembly library the Ethereum clients use).
//!
//! The workspace forbids `unsafe`; this crate denies it and allows it in [`ffi`] alone, whose
//! every block carries a safety comment. Everything exported here is safe to call, and every
//! value is valid by construction (points in their prime-order subgroups, scalars reduced).
//!
//! Why `blst` and not the pure-Rust `bls12_381` (zkcrypto) the kernel used before: a fair
//! exchange receipt makes and checks several pairings, and `bls12_381` takes about 3 ms per
//! product of pairings on this project's machines, which held fair exchange to ~140
//! receipts/s. `bls12_381` stays as the reference in the differential test
//! (`tests/differential.rs`): on random inputs both libraries must agree byte for byte.

mod ffi;

pub use ffi::{G1, G2, Scalar, pairing_product_is_one};
