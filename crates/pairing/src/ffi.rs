//! The workspace's only `unsafe` code: calls into `blst` (C and assembly) behind safe types.
//!
//! Every call below passes pointers made from Rust references to `#[repr(C)]` values that
//! `blst` declares itself (`blst_scalar`, `blst_p1`, `blst_p1_affine`, `blst_p2`,
//! `blst_p2_affine`, `blst_fp12`) or to byte arrays of exactly the length the C function reads
//! or writes (48/96 bytes for compressed points, 32 for scalars). `blst` keeps no pointer past
//! a call, does not allocate, and allows an output to alias an input. Those are the only
//! conditions the calls need; each block names the one that matters to it.
//!
//! Values of the safe types are always valid: a [`G1`] or [`G2`] holds an affine point on the
//! curve and in its prime-order subgroup (decoding checks both; arithmetic keeps them), and a
//! [`Scalar`] is reduced modulo `r`.
#![allow(unsafe_code)]

use blst::{BLST_ERROR, blst_fp12, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine, blst_scalar};

/// Bits of the group order `r`: scalars are multiplied with this many bits, which selects
/// `blst`'s constant-time GLV ladder for every scalar (its time does not depend on the value).
const SCALAR_BITS: usize = 255;

/// An integer modulo `r`, the order of G1 and G2; wiped on drop (`blst_scalar` zeroizes
/// itself).
#[derive(Clone, PartialEq, Eq)]
pub struct Scalar(blst_scalar);

impl Scalar {
    /// 64 bytes read as a little-endian 512-bit integer and reduced modulo `r` (bias below
    /// 2⁻²⁵⁶); `None` if the result is zero.
    pub fn from_wide_le(bytes: &[u8; 64]) -> Option<Scalar> {
        let mut out = blst_scalar::default();
        // SAFETY: `out` is a valid `blst_scalar`; `bytes` has the 64 bytes the length says.
        let nonzero = unsafe { blst::blst_scalar_from_le_bytes(&mut out, bytes.as_ptr(), 64) };
        nonzero.then_some(Scalar(out))
    }

    /// 32 big-endian bytes of a canonical scalar `0 < s < r`; `None` for anything else.
    pub fn from_be(bytes: &[u8; 32]) -> Option<Scalar> {
        let mut out = blst_scalar::default();
        // SAFETY: `out` is a valid `blst_scalar`; `bytes` holds the 32 bytes it reads.
        unsafe { blst::blst_scalar_from_bendian(&mut out, bytes.as_ptr()) };
        // SAFETY: `out` was written just above.
        let canonical = unsafe { blst::blst_sk_check(&out) };
        canonical.then_some(Scalar(out))
    }

    /// A small scalar (for tests and rerandomization by a public value).
    pub fn from_u64(value: u64) -> Scalar {
        let mut out = blst_scalar::default();
        out.b[..8].copy_from_slice(&value.to_le_bytes());
        Scalar(out)
    }

    /// The 32 big-endian bytes (the caller wipes them if the scalar is secret).
    pub fn to_be(&self) -> [u8; 32] {
        let mut out = [0_u8; 32];
        // SAFETY: `out` has the 32 bytes written; `self.0` is a valid scalar.
        unsafe { blst::blst_bendian_from_scalar(out.as_mut_ptr(), &self.0) };
        out
    }

    /// The 32 little-endian bytes `blst`'s multiplications read.
    fn le(&self) -> *const u8 {
        self.0.b.as_ptr()
    }
}

/// A point of the prime-order subgroup of G1 (the curve over Fp), in affine form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct G1(blst_p1_affine);

impl std::fmt::Debug for G1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G1(")?;
        self.to_compressed()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

impl std::fmt::Debug for G2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G2(")?;
        self.to_compressed()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

impl zeroize::Zeroize for G1 {
    /// Overwrites the coordinates with zeros (the identity), for points that are secrets (a
    /// signature before a fair exchange completes).
    fn zeroize(&mut self) {
        self.0.x.l.zeroize();
        self.0.y.l.zeroize();
    }
}

/// A point of the prime-order subgroup of G2 (the twist over Fp²), in affine form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct G2(blst_p2_affine);

fn g1_affine(p: &blst_p1) -> G1 {
    let mut out = blst_p1_affine::default();
    // SAFETY: both are valid `blst` values; `out` is written.
    unsafe { blst::blst_p1_to_affine(&mut out, p) };
    G1(out)
}

fn g1_projective(p: &G1) -> blst_p1 {
    let mut out = blst_p1::default();
    // SAFETY: both are valid `blst` values; `out` is written.
    unsafe { blst::blst_p1_from_affine(&mut out, &p.0) };
    out
}

fn g2_affine(p: &blst_p2) -> G2 {
    let mut out = blst_p2_affine::default();
    // SAFETY: both are valid `blst` values; `out` is written.
    unsafe { blst::blst_p2_to_affine(&mut out, p) };
    G2(out)
}

fn g2_projective(p: &G2) -> blst_p2 {
    let mut out = blst_p2::default();
    // SAFETY: both are valid `blst` values; `out` is written.
    unsafe { blst::blst_p2_from_affine(&mut out, &p.0) };
    out
}

impl G1 {
    /// The standard generator `g1`.
    pub fn generator() -> G1 {
        // SAFETY: `blst_p1_affine_generator` returns a pointer to a static constant.
        G1(unsafe { *blst::blst_p1_affine_generator() })
    }

    /// The identity (point at infinity).
    pub fn identity() -> G1 {
        // The all-zero affine value is `blst`'s encoding of infinity.
        G1(blst_p1_affine::default())
    }

    /// From the 48-byte compressed (ZCash/IETF) encoding: `None` unless it is a canonical
    /// encoding of a curve point in the prime-order subgroup (the identity included).
    pub fn from_compressed(bytes: &[u8; 48]) -> Option<G1> {
        let mut out = blst_p1_affine::default();
        // SAFETY: `out` is a valid affine point; `bytes` holds the 48 bytes read.
        let decoded = unsafe { blst::blst_p1_uncompress(&mut out, bytes.as_ptr()) };
        if decoded != BLST_ERROR::BLST_SUCCESS {
            return None;
        }
        // SAFETY: `out` was written by a successful decoding.
        let in_group = unsafe { blst::blst_p1_affine_in_g1(&out) };
        in_group.then_some(G1(out))
    }

    /// The 48-byte compressed encoding.
    pub fn to_compressed(&self) -> [u8; 48] {
        let mut out = [0_u8; 48];
        // SAFETY: `out` has the 48 bytes written; `self.0` is a valid point.
        unsafe { blst::blst_p1_affine_compress(out.as_mut_ptr(), &self.0) };
        out
    }

    /// Whether this is the identity.
    pub fn is_identity(&self) -> bool {
        // SAFETY: `self.0` is a valid point.
        unsafe { blst::blst_p1_affine_is_inf(&self.0) }
    }

    /// `s·self`, in constant time in `s`.
    pub fn mul(&self, s: &Scalar) -> G1 {
        let p = g1_projective(self);
        let mut out = blst_p1::default();
        // SAFETY: valid points; `s.le()` points at the 32 bytes of which 255 bits are read.
        unsafe { blst::blst_p1_mult(&mut out, &p, s.le(), SCALAR_BITS) };
        g1_affine(&out)
    }

    /// `self + other`.
    pub fn add(&self, other: &G1) -> G1 {
        let a = g1_projective(self);
        let mut out = blst_p1::default();
        // SAFETY: valid points; `out` is written.
        unsafe { blst::blst_p1_add_or_double_affine(&mut out, &a, &other.0) };
        g1_affine(&out)
    }

    /// `−self`.
    pub fn neg(&self) -> G1 {
        let mut p = g1_projective(self);
        // SAFETY: `p` is a valid point, negated in place.
        unsafe { blst::blst_p1_cneg(&mut p, true) };
        g1_affine(&p)
    }

    /// `self − other`.
    pub fn sub(&self, other: &G1) -> G1 {
        self.add(&other.neg())
    }

    /// `Σ kᵢ·Pᵢ` for 64-bit coefficients `kᵢ`: the random weights of a batch of pairing
    /// checks. Summed in projective form, with one conversion to affine at the end; an empty
    /// sum (or one whose terms cancel) is the identity.
    pub fn linear_combination(terms: &[(&G1, u64)]) -> G1 {
        // The identity in projective form (`Z = 0`), which `blst` adds as such.
        let mut sum = blst_p1::default();
        for (point, k) in terms {
            let p = g1_projective(point);
            let le = k.to_le_bytes();
            let mut multiple = blst_p1::default();
            // SAFETY: valid point; `le` holds the 8 bytes of which 64 bits are read.
            unsafe { blst::blst_p1_mult(&mut multiple, &p, le.as_ptr(), 64) };
            let previous = sum;
            // SAFETY: valid points (the identity included); `sum` is written.
            unsafe { blst::blst_p1_add_or_double(&mut sum, &previous, &multiple) };
        }
        g1_affine(&sum)
    }

    /// RFC 9380 `hash_to_curve` to G1 with `expand_message_xmd` over SHA-256 (suite
    /// `BLS12381G1_XMD:SHA-256_SSWU_RO_`) of `msg` under the domain separation tag `dst`.
    pub fn hash(msg: &[u8], dst: &[u8]) -> G1 {
        let mut out = blst_p1::default();
        // SAFETY: `msg` and `dst` are read for exactly their lengths; no augmentation (null
        // pointer with length 0, which `blst` accepts); `out` is written.
        unsafe {
            blst::blst_hash_to_g1(
                &mut out,
                msg.as_ptr(),
                msg.len(),
                dst.as_ptr(),
                dst.len(),
                std::ptr::null(),
                0,
            );
        }
        g1_affine(&out)
    }
}

impl G2 {
    /// The standard generator `g2`.
    pub fn generator() -> G2 {
        // SAFETY: `blst_p2_affine_generator` returns a pointer to a static constant.
        G2(unsafe { *blst::blst_p2_affine_generator() })
    }

    /// The identity (point at infinity).
    pub fn identity() -> G2 {
        G2(blst_p2_affine::default())
    }

    /// From the 96-byte compressed encoding: `None` unless it is a canonical encoding of a
    /// point of the twist in the prime-order subgroup (the identity included).
    pub fn from_compressed(bytes: &[u8; 96]) -> Option<G2> {
        let mut out = blst_p2_affine::default();
        // SAFETY: `out` is a valid affine point; `bytes` holds the 96 bytes read.
        let decoded = unsafe { blst::blst_p2_uncompress(&mut out, bytes.as_ptr()) };
        if decoded != BLST_ERROR::BLST_SUCCESS {
            return None;
        }
        // SAFETY: `out` was written by a successful decoding.
        let in_group = unsafe { blst::blst_p2_affine_in_g2(&out) };
        in_group.then_some(G2(out))
    }

    /// The 96-byte compressed encoding.
    pub fn to_compressed(&self) -> [u8; 96] {
        let mut out = [0_u8; 96];
        // SAFETY: `out` has the 96 bytes written; `self.0` is a valid point.
        unsafe { blst::blst_p2_affine_compress(out.as_mut_ptr(), &self.0) };
        out
    }

    /// Whether this is the identity.
    pub fn is_identity(&self) -> bool {
        // SAFETY: `self.0` is a valid point.
        unsafe { blst::blst_p2_affine_is_inf(&self.0) }
    }

    /// `s·self`, in constant time in `s`.
    pub fn mul(&self, s: &Scalar) -> G2 {
        let p = g2_projective(self);
        let mut out = blst_p2::default();
        // SAFETY: valid points; `s.le()` points at the 32 bytes of which 255 bits are read.
        unsafe { blst::blst_p2_mult(&mut out, &p, s.le(), SCALAR_BITS) };
        g2_affine(&out)
    }

    /// `−self`.
    pub fn neg(&self) -> G2 {
        let mut p = g2_projective(self);
        // SAFETY: `p` is a valid point, negated in place.
        unsafe { blst::blst_p2_cneg(&mut p, true) };
        g2_affine(&p)
    }
}

/// Whether `∏ e(aᵢ, bᵢ) = 1`: one Miller loop over all pairs and one final exponentiation.
/// Pairs with the identity on either side contribute 1 (`blst` skips them). An empty product
/// is 1.
pub fn pairing_product_is_one(terms: &[(&G1, &G2)]) -> bool {
    let terms: Vec<(&G1, &G2)> = terms
        .iter()
        .copied()
        .filter(|(a, b)| !a.is_identity() && !b.is_identity())
        .collect();
    if terms.is_empty() {
        return true;
    }
    let ps: Vec<*const blst_p1_affine> = terms.iter().map(|(a, _)| &a.0 as *const _).collect();
    let qs: Vec<*const blst_p2_affine> = terms.iter().map(|(_, b)| &b.0 as *const _).collect();
    let mut miller = blst_fp12::default();
    let mut result = blst_fp12::default();
    // SAFETY: `qs` and `ps` hold `terms.len()` pointers each, to points borrowed for the
    // duration of the call; `miller` and `result` are written.
    unsafe {
        blst::blst_miller_loop_n(&mut miller, qs.as_ptr(), ps.as_ptr(), terms.len());
        blst::blst_final_exp(&mut result, &miller);
        blst::blst_fp12_is_one(&result)
    }
}
