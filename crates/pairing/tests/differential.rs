//! `blst` (through this crate) against the pure-Rust `bls12_381` the kernel used before, on
//! random inputs: every scalar, point, hash and pairing check must agree byte for byte.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{
    G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, multi_miller_loop,
};
use proptest::prelude::*;
use tally_pairing::{G1, G2, Scalar, pairing_product_is_one};

const DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_TALLY_V1_";

fn reference_scalar(wide: &[u8; 64]) -> bls12_381::Scalar {
    bls12_381::Scalar::from_bytes_wide(wide)
}

fn reference_hash(msg: &[u8], dst: &[u8]) -> G1Affine {
    G1Affine::from(<G1Projective as HashToCurve<
        ExpandMsgXmd<sha2_v10::Sha256>,
    >>::hash_to_curve([msg], dst))
}

fn reference_is_one(terms: &[(G1Affine, G2Affine)]) -> bool {
    let prepared: Vec<(G1Affine, G2Prepared)> = terms
        .iter()
        .map(|(a, b)| (*a, G2Prepared::from(*b)))
        .collect();
    let refs: Vec<(&G1Affine, &G2Prepared)> = prepared.iter().map(|(a, b)| (a, b)).collect();
    multi_miller_loop(&refs).final_exponentiation() == Gt::identity()
}

fn wide() -> impl Strategy<Value = [u8; 64]> {
    proptest::array::uniform32(any::<u8>()).prop_flat_map(|lo| {
        proptest::array::uniform32(any::<u8>()).prop_map(move |hi| {
            let mut w = [0_u8; 64];
            w[..32].copy_from_slice(&lo);
            w[32..].copy_from_slice(&hi);
            w
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reduction of 64 bytes, scalar encodings, and multiples of both generators.
    #[test]
    fn scalars_and_generator_multiples_agree(w in wide()) {
        let ours = Scalar::from_wide_le(&w).unwrap();
        let theirs = reference_scalar(&w);
        let mut be = theirs.to_bytes();
        be.reverse();
        prop_assert_eq!(ours.to_be(), be);
        prop_assert_eq!(Scalar::from_be(&be).map(|s| s.to_be()), Some(be));
        prop_assert_eq!(
            G1::generator().mul(&ours).to_compressed(),
            G1Affine::from(G1Projective::generator() * theirs).to_compressed()
        );
        prop_assert_eq!(
            G2::generator().mul(&ours).to_compressed(),
            G2Affine::from(G2Projective::generator() * theirs).to_compressed()
        );
    }

    /// Canonical big-endian scalars: both accept exactly the nonzero values below `r`.
    #[test]
    fn scalar_decoding_agrees(be in proptest::array::uniform32(any::<u8>()), top in 0_u8..0x80) {
        let mut be = be;
        be[0] = top; // values both below and above r (r ≈ 0x73ed…)
        let mut le = be;
        le.reverse();
        let theirs = Option::<bls12_381::Scalar>::from(bls12_381::Scalar::from_bytes(&le))
            .filter(|s| *s != bls12_381::Scalar::zero());
        prop_assert_eq!(Scalar::from_be(&be).is_some(), theirs.is_some());
    }

    /// Hashing to G1, addition, subtraction and negation.
    #[test]
    fn hashing_and_addition_agree(msg in proptest::collection::vec(any::<u8>(), 0..200), w in wide()) {
        let h = G1::hash(&msg, DST);
        let href = reference_hash(&msg, DST);
        prop_assert_eq!(h.to_compressed(), href.to_compressed());
        let s = Scalar::from_wide_le(&w).unwrap();
        let p = G1::generator().mul(&s);
        let pref = G1Affine::from(G1Projective::generator() * reference_scalar(&w));
        prop_assert_eq!(
            h.add(&p).to_compressed(),
            G1Affine::from(G1Projective::from(href) + pref).to_compressed()
        );
        prop_assert_eq!(
            h.sub(&p).to_compressed(),
            G1Affine::from(G1Projective::from(href) - pref).to_compressed()
        );
        prop_assert_eq!(h.add(&h).to_compressed(), G1Affine::from(G1Projective::from(href).double()).to_compressed());
        prop_assert!(h.sub(&h).is_identity());
        prop_assert_eq!(h.neg().to_compressed(), (-href).to_compressed());
    }

    /// A product of pairings that is one, and the same product with one factor changed.
    #[test]
    fn pairing_checks_agree(msg in proptest::collection::vec(any::<u8>(), 0..64), a in wide(), b in wide()) {
        let (sa, sb) = (Scalar::from_wide_le(&a).unwrap(), Scalar::from_wide_le(&b).unwrap());
        let (ra, rb) = (reference_scalar(&a), reference_scalar(&b));
        // e(a·H, b·g2) · e(−H, ab·g2)... written as e(a·H, Q) · e(−H, a·Q) with Q = b·g2.
        let h = G1::hash(&msg, DST);
        let q = G2::generator().mul(&sb);
        let holds = [(&h.mul(&sa), &q), (&h.neg(), &q.mul(&sa))];
        let href = reference_hash(&msg, DST);
        let qref = G2Affine::from(G2Projective::generator() * rb);
        let holds_ref = [
            (G1Affine::from(href * ra), qref),
            (-href, G2Affine::from(qref * ra)),
        ];
        prop_assert!(pairing_product_is_one(&holds));
        prop_assert!(reference_is_one(&holds_ref));
        // Off by one multiple of H: neither may accept.
        let off = h.mul(&sa).add(&h);
        prop_assert!(!pairing_product_is_one(&[(&off, &q), (&h.neg(), &q.mul(&sa))]));
        let off_ref = G1Affine::from(href * ra + href);
        prop_assert!(!reference_is_one(&[(off_ref, qref), holds_ref[1]]));
    }

    /// Sums with 64-bit weights (a batch check's random linear combination), the weights
    /// including 1 and `u64::MAX`, and a point repeated (so that `blst` doubles).
    #[test]
    fn linear_combinations_agree(
        ws in proptest::collection::vec(wide(), 0..6),
        ks in proptest::collection::vec(any::<u64>(), 6),
    ) {
        let mut points: Vec<G1> = ws.iter().map(|w| G1::generator().mul(&Scalar::from_wide_le(w).unwrap())).collect();
        let mut refs: Vec<G1Projective> = ws.iter().map(|w| G1Projective::generator() * reference_scalar(w)).collect();
        if let (Some(p), Some(r)) = (points.first().copied(), refs.first().copied()) {
            points.push(p);
            refs.push(r);
        }
        let mut weights = ks.clone();
        weights[0] = 1;
        weights[1] = u64::MAX;
        let terms: Vec<(&G1, u64)> = points.iter().zip(weights.iter().copied().chain(ks.iter().copied())).collect();
        let reference = refs
            .iter()
            .zip(weights.iter().copied().chain(ks.iter().copied()))
            .fold(G1Projective::identity(), |sum, (p, k)| sum + p * bls12_381::Scalar::from(k));
        prop_assert_eq!(
            G1::linear_combination(&terms).to_compressed(),
            G1Affine::from(reference).to_compressed()
        );
    }

    /// Decoding: a valid point with one byte changed is accepted by both or by neither (about
    /// half the changed x-coordinates are on the curve but outside the subgroup), and decodes
    /// to the same point.
    #[test]
    fn decoding_agrees(w in wide(), at in 0_usize..96, byte in any::<u8>()) {
        let s = Scalar::from_wide_le(&w).unwrap();
        let mut g1 = G1::generator().mul(&s).to_compressed();
        g1[at % 48] = byte;
        let theirs = Option::<G1Affine>::from(G1Affine::from_compressed(&g1))
            .filter(|p| !bool::from(p.is_identity()));
        let ours = G1::from_compressed(&g1).filter(|p| !p.is_identity());
        prop_assert_eq!(ours.map(|p| p.to_compressed()), theirs.map(|p| p.to_compressed()));
        let mut g2 = G2::generator().mul(&s).to_compressed();
        g2[at] = byte;
        let theirs = Option::<G2Affine>::from(G2Affine::from_compressed(&g2))
            .filter(|p| !bool::from(p.is_identity()));
        let ours = G2::from_compressed(&g2).filter(|p| !p.is_identity());
        prop_assert_eq!(ours.map(|p| p.to_compressed()), theirs.map(|p| p.to_compressed()));
    }
}

/// Some changed encodings must land on the curve outside the subgroup, or the decoding test
/// above would not be testing the subgroup check: count them over fixed inputs.
#[test]
fn some_changed_encodings_are_off_the_subgroup_and_refused() {
    let mut off_subgroup = 0;
    for i in 0..200_u8 {
        let mut bytes = G1::generator()
            .mul(&Scalar::from_u64(u64::from(i) + 2))
            .to_compressed();
        bytes[47] ^= 1;
        let on_curve =
            Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&bytes)).is_some();
        if on_curve {
            assert!(
                G1::from_compressed(&bytes).is_none(),
                "accepted a point outside G1's subgroup"
            );
            assert!(Option::<G1Affine>::from(G1Affine::from_compressed(&bytes)).is_none());
            off_subgroup += 1;
        }
    }
    assert!(
        off_subgroup > 20,
        "only {off_subgroup} of 200 changed points were on the curve"
    );
}

/// RFC 9380 §J.9.1, `BLS12381G1_XMD:SHA-256_SSWU_RO_`, msg "" and "abc".
#[test]
fn hash_to_curve_matches_rfc9380() {
    let dst = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_";
    let expected = |x: &str, y: &str| {
        let bytes: [u8; 96] = hex::decode([x, y].concat()).unwrap().try_into().unwrap();
        G1Affine::from_uncompressed(&bytes).unwrap().to_compressed()
    };
    assert_eq!(
        G1::hash(b"", dst).to_compressed(),
        expected(
            "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1",
            "08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265"
        )
    );
    assert_eq!(
        G1::hash(b"abc", dst).to_compressed(),
        expected(
            "03567bc5ef9c690c2ab2ecdf6a96ef1c139cc0b2f284dca0a9a7943388a49a3aee664ba5379a7655d3c68900be2f6903",
            "0b9c15f3fe6e5cf4211f346271d7b01c8f3b28be689c8429c85b67af215533311f0b8dfaaa154fa6b88176c229f2885d"
        )
    );
}

/// Identities: decoding the identity encoding gives the identity; pairings with it are one.
#[test]
fn identity_behaves() {
    let mut bytes = [0_u8; 48];
    bytes[0] = 0xc0;
    assert!(G1::from_compressed(&bytes).unwrap().is_identity());
    assert_eq!(G1::identity().to_compressed(), bytes);
    let g = G1::generator();
    assert_eq!(g.add(&G1::identity()), g);
    assert_eq!(G1::identity().add(&g), g);
    assert_eq!(g.sub(&G1::identity()), g);
    assert!(G1::identity().neg().is_identity());
    assert!(g.mul(&Scalar::from_u64(0)).is_identity());
    assert!(G2::generator().mul(&Scalar::from_u64(0)).is_identity());
    assert!(pairing_product_is_one(&[(
        &G1::identity(),
        &G2::generator()
    )]));
    assert!(pairing_product_is_one(&[]));
    assert!(G1::linear_combination(&[]).is_identity());
    assert!(G1::linear_combination(&[(&g, 3), (&g.neg(), 3)]).is_identity());
    assert_eq!(G1::linear_combination(&[(&G1::identity(), 5), (&g, 1)]), g);
    assert!(!pairing_product_is_one(&[(
        &G1::generator(),
        &G2::generator()
    )]));
}

/// `cargo test --release -p tally-pairing timing -- --ignored --nocapture`
#[test]
#[ignore = "timing, run by hand in release mode"]
fn timing() {
    let n = 200_u32;
    let time = |what: &str, f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        println!("{what}: {:?}", start.elapsed() / n);
    };
    let s = Scalar::from_wide_le(&[7; 64]).unwrap();
    let h = G1::hash(b"abc", DST);
    let q = G2::generator().mul(&s);
    let (g1c, g2c) = (h.to_compressed(), q.to_compressed());
    time("hash to G1", &mut || {
        let _ = G1::hash(b"timing", DST);
    });
    time("G1 mul", &mut || {
        let _ = h.mul(&s);
    });
    time("G2 mul", &mut || {
        let _ = q.mul(&s);
    });
    time("G1 decompress + subgroup", &mut || {
        let _ = G1::from_compressed(&g1c);
    });
    time("G2 decompress + subgroup", &mut || {
        let _ = G2::from_compressed(&g2c);
    });
    let neg = G2::generator().neg();
    let many: Vec<(&G1, u64)> = (0..16)
        .map(|i| (&h, 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i + 1)))
        .collect();
    time("16-term linear combination, 64-bit weights", &mut || {
        let _ = G1::linear_combination(&many);
    });
    time("pairing product, 2 terms", &mut || {
        let _ = pairing_product_is_one(&[(&h, &neg), (&h, &q)]);
    });
    time("pairing product, 3 terms", &mut || {
        let _ = pairing_product_is_one(&[(&h, &neg), (&h, &q), (&h, &q)]);
    });
}
