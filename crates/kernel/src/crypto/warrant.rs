//! Warrants: end-entity-issued X.509 certificates that authorise proxy signing.
//!
//! A manager (or customer) X holds an end-entity certificate from the node CA. To let the
//! node's receipt service sign receipts on X's behalf, X signs a *warrant* with X's own Ed25519
//! key: an X.509 v3 certificate in our [`super::ca`] profile whose issuer is X's certificate
//! subject, whose subject is `OU=warrant, CN=<service name>` with the node's public key, whose
//! validity window bounds the authorisation, and which carries the critical [`OID_WARRANT`]
//! extension saying which counterparties the proxy may sign with. A proxy signature names its
//! warrant (serial or [`Certificate::fingerprint`]) so a verifier can trace it back through
//! [`check_warrant`] to X and on to the CA.
//!
//! Chain check: webpki cannot validate an end-entity-issued certificate, so [`check_warrant`]
//! does it by hand, in this order, each failure with its own error: X's certificate was issued
//! by the CA and is valid at `now` ([`Certificate::verify_issued_by`]; `UnknownIssuer`,
//! `BadSignature`, `Expired`, `NotYetValid`, `IssuerNotCa` about the *CA*); X's certificate is
//! an end entity (`Malformed`); the warrant's issuer name is X's subject (`UnknownIssuer`); the
//! warrant's signature verifies under X's key over the exact TBS bytes (`BadSignature`); the
//! warrant is valid at `now` (`NotYetValid` / `Expired`, whose timestamps tell the caller
//! which certificate's window failed); role `warrant`, `basicConstraints cA=FALSE`, `keyUsage
//! digitalSignature`, no unknown critical extension, [`OID_WARRANT`] present, critical and
//! well-formed (`Malformed`); the warrant's key is not X's own key (`WrongKey`).
//!
//! Extension OIDs. The brief asked for UUID OIDs under `2.25` (X.667). Those have a 128-bit
//! arc, and `const-oid` (which `x509-cert` parses every certificate with) limits arcs to 32
//! bits and *deliberately* refuses UUID OIDs: a certificate carrying one cannot even be built
//! or parsed. So each OID is still derived from a fresh random v4 UUID, needing no
//! registration, but in Microsoft's arc `1.2.840.113556.1.8000.2554` that was delegated for
//! exactly this ("GUID-based customer use"): UUID `aaaabbbb-cccc-dddd-eeee-ffffffgggggg`
//! becomes `1.2.840.113556.1.8000.2554.A.B.C.D.E.F.G`, each hex chunk written in decimal.
//!
//! `TallyWarrant` extension value (DER, exactly this; parsing demands canonical DER):
//!
//! ```text
//! TallyWarrant ::= SEQUENCE {
//!     counterparties CHOICE {
//!         any    [0] IMPLICIT NULL,                          -- 80 00
//!         names  SEQUENCE SIZE (1..64) OF UTF8String         -- each 1..=64 chars, no
//!     },                                                     -- control chars, no duplicates
//!     blsKey OCTET STRING (SIZE (96)) OPTIONAL               -- BLS12-381 G2 public key
//! }
//! ```
//!
//! Names keep the caller's order and are compared by exact string equality (no case folding or
//! normalisation); use the same identifier the receipt names the counterparty by. The 96 BLS
//! bytes are length-checked only; [`super::bls`] decides whether they are a curve point.
//!
//! Key decisions: a warrant is an ordinary certificate, so it is one DER blob a verifier can
//! archive and inspect with any X.509 viewer, and it reuses the CA's builder, canonical-DER
//! parser and signature check. Issuing refuses a window outside X's own validity rather than
//! clamping it, like [`super::CertificateAuthority::issue`]: the caller sees what it gets.
//! Rejected: a JSON warrant signed with [`SigningKey::sign`] (a second format and verifier for
//! the same job) and attribute certificates (RFC 5755; no Rust support).

use x509_cert::der::asn1::{Any, AnyRef, OctetString};
use x509_cert::der::{Decode, Encode, Tag, TagNumber, Tagged};

use super::ca::{self, Certificate, NAME_LEN_MAX};
use super::keys::{SigningKey, VerifyingKey};
use super::{CryptoError, Result};
use crate::time::Timestamp;

/// The `TallyWarrant` extension (critical on warrants). Derived from the random UUID
/// `3dfeee70-a409-4061-a00e-6811c50d509f` (as a `2.25` OID:
/// `2.25.82406587282754311135345158529280200863`, not usable with `x509-cert`; see the module
/// docs).
pub const OID_WARRANT: &str =
    "1.2.840.113556.1.8000.2554.15870.61040.41993.16481.40974.6820293.872607";

/// A party's certified BLS12-381 G2 public key for fair exchange: `extnValue` is an
/// `OCTET STRING` of the 96-byte compressed key; non-critical, on CA-issued party
/// certificates. Derived from the random UUID `0be53508-e941-4273-8082-a37d013c94cd` (as a
/// `2.25` OID: `2.25.15811619607961745054994464598671529165`).
pub const OID_BLS_KEY: &str =
    "1.2.840.113556.1.8000.2554.3045.13576.59713.17011.32898.10714369.3970253";

/// The role (subject `OU`) of every warrant.
pub const ROLE_WARRANT: &str = "warrant";

/// Most counterparty names one warrant may list.
pub const COUNTERPARTIES_MAX: usize = 64;

/// Length of a compressed BLS12-381 G2 public key.
pub const BLS_KEY_LEN: usize = 96;

/// `basicConstraints` with `cA = FALSE`: an empty SEQUENCE.
const BASIC_CONSTRAINTS_END_ENTITY: [u8; 2] = [0x30, 0x00];
/// `keyUsage` = `digitalSignature` only.
const KEY_USAGE_DIGITAL_SIGNATURE: [u8; 4] = [0x03, 0x02, 0x07, 0x80];
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";

/// Tag of the `any [0] IMPLICIT NULL` alternative.
const TAG_ANY: Tag = Tag::ContextSpecific {
    constructed: false,
    number: TagNumber(0),
};

/// Whom the proxy may sign with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counterparties {
    /// Any counterparty.
    Any,
    /// Only these (1..=64 distinct names, each 1..=64 characters without control characters).
    Names(Vec<String>),
}

/// What a warrant authorises, as carried in its [`OID_WARRANT`] extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarrantTerms {
    /// The counterparties the proxy may sign with.
    pub counterparties: Counterparties,
    /// The proxy's BLS12-381 G2 public key for fair exchange, if it has one.
    pub bls_key: Option<[u8; BLS_KEY_LEN]>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= NAME_LEN_MAX && !name.chars().any(char::is_control)
}

/// Why a names list breaks the format, if it does.
fn names_problem(names: &[String]) -> Option<&'static str> {
    if names.is_empty() || names.len() > COUNTERPARTIES_MAX {
        return Some("a warrant lists 1..=64 counterparty names");
    }
    if !names.iter().all(|n| valid_name(n)) {
        return Some("counterparty names must be 1..=64 printable characters");
    }
    if names
        .iter()
        .enumerate()
        .any(|(i, n)| names[..i].contains(n))
    {
        return Some("counterparty names must be distinct");
    }
    None
}

fn der_err(what: &'static str) -> impl Fn(x509_cert::der::Error) -> CryptoError {
    move |e| CryptoError::malformed(what, e)
}

impl WarrantTerms {
    /// Whether the proxy may sign with `counterparty` (exact string match against the names).
    pub fn allows(&self, counterparty: &str) -> bool {
        match &self.counterparties {
            Counterparties::Any => true,
            Counterparties::Names(names) => names.iter().any(|n| n == counterparty),
        }
    }

    /// The DER `TallyWarrant` (see the module docs). `ApiMisuse` for a names list that breaks
    /// the limits.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        let choice = match &self.counterparties {
            Counterparties::Any => Any::new(TAG_ANY, []).map_err(der_err("warrant terms"))?,
            Counterparties::Names(names) => {
                if let Some(problem) = names_problem(names) {
                    return Err(CryptoError::ApiMisuse(problem));
                }
                // `Vec<String>` encodes as SEQUENCE OF UTF8String, in order.
                Any::encode_from(names).map_err(der_err("warrant terms"))?
            }
        };
        let mut fields = vec![choice];
        if let Some(key) = &self.bls_key {
            let octets = OctetString::new(key.as_slice()).map_err(der_err("warrant BLS key"))?;
            fields.push(Any::encode_from(&octets).map_err(der_err("warrant BLS key"))?);
        }
        fields.to_der().map_err(der_err("warrant terms"))
    }

    /// Parses a DER `TallyWarrant`; `Malformed` unless it is canonical DER within the limits.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let malformed = |reason: &str| CryptoError::malformed("warrant terms", reason);
        let fields = Vec::<AnyRef<'_>>::from_der(der).map_err(der_err("warrant terms"))?;
        let (choice, bls) = match fields.as_slice() {
            [choice] => (choice, None),
            [choice, bls] => (choice, Some(bls)),
            _ => return Err(malformed("expected 1 or 2 fields")),
        };
        let counterparties = if choice.tag() == TAG_ANY {
            if !choice.value().is_empty() {
                return Err(malformed("`any` must be an empty [0] NULL"));
            }
            Counterparties::Any
        } else if choice.tag() == Tag::Sequence {
            let names: Vec<String> = choice.decode_as().map_err(der_err("warrant names"))?;
            if let Some(problem) = names_problem(&names) {
                return Err(malformed(problem));
            }
            Counterparties::Names(names)
        } else {
            return Err(malformed("counterparties is neither [0] NULL nor SEQUENCE"));
        };
        let bls_key = match bls {
            None => None,
            Some(field) => {
                let octets: OctetString = field.decode_as().map_err(der_err("warrant BLS key"))?;
                Some(bls_bytes(octets.as_bytes())?)
            }
        };
        let terms = WarrantTerms {
            counterparties,
            bls_key,
        };
        if terms.to_der()? != der {
            return Err(malformed("not canonical DER"));
        }
        Ok(terms)
    }
}

fn bls_bytes(bytes: &[u8]) -> Result<[u8; BLS_KEY_LEN]> {
    <[u8; BLS_KEY_LEN]>::try_from(bytes).map_err(|_| {
        CryptoError::Malformed(format!(
            "BLS public key must be {BLS_KEY_LEN} bytes, got {}",
            bytes.len()
        ))
    })
}

/// X (holding `issuer_cert` and its key `issuer_key`) signs a warrant for `subject_key` (the
/// node's key) under `subject_name` (e.g. `tally receipt service`), valid from `not_before` to
/// `not_after` inclusive (whole seconds). Refused with `ApiMisuse` when the window is not inside
/// `issuer_cert`'s validity, when `issuer_cert` is a CA, when `subject_key` is X's own key, or
/// for bad names/terms; `WrongKey` when `issuer_key` is not the key `issuer_cert` certifies.
pub fn issue_warrant(
    issuer_cert: &Certificate,
    issuer_key: &SigningKey,
    subject_key: &VerifyingKey,
    subject_name: &str,
    terms: &WarrantTerms,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<Certificate> {
    if issuer_cert.is_ca() {
        return Err(CryptoError::ApiMisuse(
            "warrants are issued by end entities, not by a CA",
        ));
    }
    if *subject_key == issuer_key.verifying_key() {
        return Err(CryptoError::ApiMisuse(
            "a warrant must delegate to a key other than its issuer's",
        ));
    }
    let value = terms.to_der()?;
    ca::issue_by_end_entity(
        issuer_cert,
        issuer_key,
        subject_name,
        subject_key,
        ROLE_WARRANT,
        not_before,
        not_after,
        &[(OID_WARRANT, &value, true)],
    )
}

/// Checks `warrant` against the certificate of its issuer X and the node CA at `now` (the order
/// and errors are listed in the module docs) and returns its terms.
pub fn check_warrant(
    warrant: &Certificate,
    issuer_cert: &Certificate,
    ca: &Certificate,
    now: Timestamp,
) -> Result<WarrantTerms> {
    let malformed = |reason: &str| CryptoError::malformed("warrant", reason);
    issuer_cert.verify_issued_by(ca, now)?;
    if issuer_cert.is_ca() {
        return Err(malformed(
            "its issuer certificate is a CA, not an end entity",
        ));
    }
    if !warrant.issuer_name_is_subject_of(issuer_cert) {
        return Err(CryptoError::UnknownIssuer);
    }
    let issuer_key = issuer_cert.public_key()?;
    warrant.verify_signature_with(&issuer_key)?;
    warrant.check_validity(now)?;
    if warrant.role().as_deref() != Some(ROLE_WARRANT) {
        return Err(malformed("subject role is not `warrant`"));
    }
    if warrant.extension(OID_BASIC_CONSTRAINTS)?.as_deref()
        != Some(BASIC_CONSTRAINTS_END_ENTITY.as_slice())
    {
        return Err(malformed("basicConstraints must be present with cA=FALSE"));
    }
    if warrant.extension(OID_KEY_USAGE)?.as_deref() != Some(KEY_USAGE_DIGITAL_SIGNATURE.as_slice())
    {
        return Err(malformed("keyUsage must be digitalSignature"));
    }
    let known = [OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_WARRANT];
    if let Some(oid) = warrant
        .critical_extension_oids()
        .into_iter()
        .find(|oid| !known.contains(&oid.as_str()))
    {
        return Err(CryptoError::Malformed(format!(
            "warrant: unknown critical extension {oid}"
        )));
    }
    let value = warrant
        .extension(OID_WARRANT)?
        .ok_or_else(|| malformed("no TallyWarrant extension"))?;
    if !warrant.extension_is_critical(OID_WARRANT)? {
        return Err(malformed("TallyWarrant extension is not critical"));
    }
    let terms = WarrantTerms::from_der(&value)?;
    if warrant.public_key()? == issuer_key {
        return Err(CryptoError::WrongKey(
            "warrant delegates to its issuer's own key",
        ));
    }
    Ok(terms)
}

/// The DER `extnValue` for [`OID_BLS_KEY`]: an `OCTET STRING` holding `key`.
pub fn bls_key_extension(key: &[u8; BLS_KEY_LEN]) -> Result<Vec<u8>> {
    OctetString::new(key.as_slice())
        .and_then(|o| o.to_der())
        .map_err(der_err("BLS key extension"))
}

/// The BLS key certified in `cert`'s [`OID_BLS_KEY`] extension: `None` when absent,
/// `Malformed` unless the value is exactly one DER `OCTET STRING` of 96 bytes.
pub fn certificate_bls_key(cert: &Certificate) -> Result<Option<[u8; BLS_KEY_LEN]>> {
    let Some(value) = cert.extension(OID_BLS_KEY)? else {
        return Ok(None);
    };
    let octets = OctetString::from_der(&value).map_err(der_err("BLS key extension"))?;
    bls_bytes(octets.as_bytes()).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use crate::crypto::CertificateAuthority;

    const DAY_S: i64 = 86_400;
    /// 2026-01-01T00:00:00Z.
    const T0: Timestamp = Timestamp(1_767_225_600_000_000);

    struct World {
        ca: CertificateAuthority,
        x_key: SigningKey,
        x_cert: Certificate,
        node: VerifyingKey,
    }

    fn world() -> World {
        let ca = CertificateAuthority::generate_with_key(
            SigningKey::from_seed(&[1; 32]),
            "Tally node CA",
            T0,
            365,
        )
        .unwrap();
        let x_key = SigningKey::from_seed(&[2; 32]);
        let x_cert = ca
            .issue(
                "manager-x",
                &x_key.verifying_key(),
                "manager",
                T0,
                T0.plus_seconds(90 * DAY_S),
                &[],
            )
            .unwrap();
        let node = SigningKey::from_seed(&[3; 32]).verifying_key();
        World {
            ca,
            x_key,
            x_cert,
            node,
        }
    }

    fn names(list: &[&str]) -> WarrantTerms {
        WarrantTerms {
            counterparties: Counterparties::Names(list.iter().map(|s| s.to_string()).collect()),
            bls_key: None,
        }
    }

    fn any() -> WarrantTerms {
        WarrantTerms {
            counterparties: Counterparties::Any,
            bls_key: Some([7; BLS_KEY_LEN]),
        }
    }

    /// A warrant valid for days 1..=30.
    fn warrant(w: &World, terms: &WarrantTerms) -> Certificate {
        issue_warrant(
            &w.x_cert,
            &w.x_key,
            &w.node,
            "tally receipt service",
            terms,
            T0.plus_seconds(DAY_S),
            T0.plus_seconds(30 * DAY_S),
        )
        .unwrap()
    }

    fn now() -> Timestamp {
        T0.plus_seconds(10 * DAY_S)
    }

    /// A warrant-shaped certificate signed by X with arbitrary extensions.
    fn raw(w: &World, role: &str, extra: &[ca::ExtraExtension<'_>]) -> Certificate {
        ca::issue_by_end_entity(
            &w.x_cert,
            &w.x_key,
            "tally receipt service",
            &w.node,
            role,
            T0.plus_seconds(DAY_S),
            T0.plus_seconds(30 * DAY_S),
            extra,
        )
        .unwrap()
    }

    fn malformed(r: Result<WarrantTerms>, needle: &str) {
        match r {
            Err(CryptoError::Malformed(text)) => assert!(text.contains(needle), "{text}"),
            other => panic!("expected Malformed({needle}), got {other:?}"),
        }
    }

    #[test]
    fn round_trip_with_names_and_any() {
        let w = world();
        for terms in [names(&["alice", "bob"]), any()] {
            let cert = warrant(&w, &terms);
            let back = Certificate::from_der(cert.as_der()).unwrap();
            assert_eq!(
                check_warrant(&back, &w.x_cert, w.ca.certificate(), now()).unwrap(),
                terms
            );
            assert_eq!(cert.role().as_deref(), Some(ROLE_WARRANT));
            assert_eq!(
                cert.subject_common_name().as_deref(),
                Some("tally receipt service")
            );
            assert_eq!(cert.issuer_common_name().as_deref(), Some("manager-x"));
            assert_eq!(cert.public_key().unwrap(), w.node);
            assert!(cert.extension_is_critical(OID_WARRANT).unwrap());
            assert!(!cert.is_ca());
            // The window is inclusive at both ends.
            check_warrant(&cert, &w.x_cert, w.ca.certificate(), T0.plus_seconds(DAY_S)).unwrap();
            check_warrant(
                &cert,
                &w.x_cert,
                w.ca.certificate(),
                T0.plus_seconds(30 * DAY_S),
            )
            .unwrap();
        }
    }

    #[test]
    fn allows_matches_exact_names_or_anyone() {
        let terms = names(&["alice", "bob"]);
        assert!(terms.allows("alice"));
        assert!(terms.allows("bob"));
        assert!(!terms.allows("Alice"));
        assert!(!terms.allows("carol"));
        assert!(!terms.allows(""));
        assert!(any().allows("carol"));
    }

    #[test]
    fn terms_der_golden_vectors() {
        let terms = WarrantTerms {
            counterparties: Counterparties::Names(vec!["alice".into(), "bob".into()]),
            bls_key: Some([1; BLS_KEY_LEN]),
        };
        let der = terms.to_der().unwrap();
        // SEQUENCE(112) { SEQUENCE(12) { "alice", "bob" }, OCTET STRING(96) 01.. }
        let expected = format!("3070300c0c05616c6963650c03626f620460{}", "01".repeat(96));
        assert_eq!(hex::encode(&der), expected);
        assert_eq!(WarrantTerms::from_der(&der).unwrap(), terms);

        let any_plain = WarrantTerms {
            counterparties: Counterparties::Any,
            bls_key: None,
        };
        assert_eq!(hex::encode(any_plain.to_der().unwrap()), "30028000");
        assert_eq!(
            WarrantTerms::from_der(&hex::decode("30028000").unwrap()).unwrap(),
            any_plain
        );
        assert_eq!(
            hex::encode(any().to_der().unwrap()),
            format!("306480000460{}", "07".repeat(96))
        );
    }

    #[test]
    fn malformed_terms_are_refused() {
        let bad = |h: &str| WarrantTerms::from_der(&hex::decode(h).unwrap());
        malformed(bad("3000"), "1 or 2 fields");
        malformed(bad("3003800100"), "empty"); // [0] with content
        malformed(bad("30020500"), "neither"); // universal NULL instead of [0]
        malformed(bad("30023000"), "1..=64"); // empty names list
        malformed(bad("30070c0161300002"), "warrant terms"); // garbage
        malformed(bad("300a30080c01610c01610000"), "warrant names"); // junk inside the names
        malformed(bad("300830060c01610c0161"), "distinct");
        malformed(bad("30060c0161"), "warrant terms"); // truncated
        malformed(bad("300630040c00"), "warrant terms"); // truncated sequence
        malformed(bad("30053003020161"), "warrant names"); // INTEGER, not UTF8String
        malformed(bad("300430020c00"), "printable"); // empty name
        malformed(bad("300780000403010203"), "96 bytes"); // short BLS key
        malformed(bad("30028000ff"), "warrant terms"); // trailing byte
        malformed(bad("3081028000"), "warrant terms"); // non-minimal length
        // More than 64 names, and names that are too long, are refused both ways.
        let many: Vec<String> = (0..65).map(|i| format!("n{i}")).collect();
        let too_many = WarrantTerms {
            counterparties: Counterparties::Names(many),
            bls_key: None,
        };
        assert!(matches!(too_many.to_der(), Err(CryptoError::ApiMisuse(_))));
        assert!(matches!(
            names(&[&"x".repeat(65)]).to_der(),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert!(matches!(
            names(&["a\n"]).to_der(),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert!(matches!(
            names(&[]).to_der(),
            Err(CryptoError::ApiMisuse(_))
        ));
    }

    #[test]
    fn expired_and_not_yet_valid_warrants_are_refused() {
        let w = world();
        let cert = warrant(&w, &any());
        let at = |t| check_warrant(&cert, &w.x_cert, w.ca.certificate(), t);
        assert!(matches!(
            at(T0.plus_seconds(30 * DAY_S).plus_micros(1)),
            Err(CryptoError::Expired { not_after, .. }) if not_after == T0.plus_seconds(30 * DAY_S)
        ));
        assert!(matches!(
            at(T0.plus_seconds(DAY_S).plus_micros(-1)),
            Err(CryptoError::NotYetValid { not_before, .. }) if not_before == T0.plus_seconds(DAY_S)
        ));
    }

    #[test]
    fn expired_issuer_certificate_is_refused() {
        let w = world();
        let short =
            w.ca.issue(
                "manager-x",
                &w.x_key.verifying_key(),
                "manager",
                T0,
                T0.plus_seconds(5 * DAY_S),
                &[],
            )
            .unwrap();
        let cert = issue_warrant(
            &short,
            &w.x_key,
            &w.node,
            "svc",
            &any(),
            T0,
            T0.plus_seconds(5 * DAY_S),
        )
        .unwrap();
        check_warrant(
            &cert,
            &short,
            w.ca.certificate(),
            T0.plus_seconds(5 * DAY_S),
        )
        .unwrap();
        // The issuer certificate expires with the warrant; its own window is reported.
        assert!(matches!(
            check_warrant(&cert, &short, w.ca.certificate(), T0.plus_seconds(6 * DAY_S)),
            Err(CryptoError::Expired { not_after, .. }) if not_after == T0.plus_seconds(5 * DAY_S)
        ));
    }

    #[test]
    fn warrant_signed_by_another_key_is_a_bad_signature() {
        let w = world();
        let cert = warrant(&w, &any());
        // A second certificate for the same name but another key (e.g. a re-issued one).
        let other_key = SigningKey::from_seed(&[4; 32]);
        let twin =
            w.ca.issue(
                "manager-x",
                &other_key.verifying_key(),
                "manager",
                T0,
                T0.plus_seconds(90 * DAY_S),
                &[],
            )
            .unwrap();
        assert!(matches!(
            check_warrant(&cert, &twin, w.ca.certificate(), now()),
            Err(CryptoError::BadSignature)
        ));
    }

    #[test]
    fn issuer_certificate_from_another_ca_is_refused() {
        let w = world();
        let cert = warrant(&w, &any());
        let other = CertificateAuthority::generate("Other CA", T0, 365).unwrap();
        assert!(matches!(
            check_warrant(&cert, &w.x_cert, other.certificate(), now()),
            Err(CryptoError::UnknownIssuer)
        ));
        let impostor = CertificateAuthority::generate("Tally node CA", T0, 365).unwrap();
        assert!(matches!(
            check_warrant(&cert, &w.x_cert, impostor.certificate(), now()),
            Err(CryptoError::BadSignature)
        ));
        // A leaf is no CA.
        assert!(matches!(
            check_warrant(&cert, &w.x_cert, &w.x_cert, now()),
            Err(CryptoError::IssuerNotCa)
        ));
    }

    #[test]
    fn warrant_from_a_differently_named_issuer_is_refused() {
        let w = world();
        let cert = warrant(&w, &any());
        let y_key = SigningKey::from_seed(&[5; 32]);
        let y_cert =
            w.ca.issue(
                "manager-y",
                &y_key.verifying_key(),
                "manager",
                T0,
                T0.plus_seconds(90 * DAY_S),
                &[],
            )
            .unwrap();
        assert!(matches!(
            check_warrant(&cert, &y_cert, w.ca.certificate(), now()),
            Err(CryptoError::UnknownIssuer)
        ));
        // Nor may the CA certificate stand in for the issuer.
        malformed(
            check_warrant(&cert, w.ca.certificate(), w.ca.certificate(), now()),
            "not an end entity",
        );
    }

    #[test]
    fn missing_noncritical_or_bad_extension_and_wrong_role_are_refused() {
        let w = world();
        let check = |c: &Certificate| check_warrant(c, &w.x_cert, w.ca.certificate(), now());
        let value = any().to_der().unwrap();
        malformed(check(&raw(&w, ROLE_WARRANT, &[])), "no TallyWarrant");
        malformed(
            check(&raw(&w, ROLE_WARRANT, &[(OID_WARRANT, &value, false)])),
            "not critical",
        );
        malformed(
            check(&raw(
                &w,
                ROLE_WARRANT,
                &[(OID_WARRANT, &[0x30, 0x00], true)],
            )),
            "1 or 2 fields",
        );
        malformed(
            check(&raw(&w, "manager", &[(OID_WARRANT, &value, true)])),
            "role",
        );
        malformed(
            check(&raw(
                &w,
                ROLE_WARRANT,
                &[
                    (OID_WARRANT, &value, true),
                    ("1.2.3.4", &[0x05, 0x00], true),
                ],
            )),
            "unknown critical extension 1.2.3.4",
        );
        // The well-formed one passes, for contrast.
        check(&raw(&w, ROLE_WARRANT, &[(OID_WARRANT, &value, true)])).unwrap();
    }

    #[test]
    fn any_flipped_bit_breaks_the_warrant() {
        let w = world();
        let cert = warrant(&w, &names(&["alice", "bob"]));
        let der = cert.to_der();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let verdict = Certificate::from_der(&bad)
                .and_then(|c| check_warrant(&c, &w.x_cert, w.ca.certificate(), now()));
            assert!(verdict.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn bad_issue_requests_are_refused() {
        let w = world();
        let end = T0.plus_seconds(30 * DAY_S);
        let issue = |cert: &Certificate, key: &SigningKey, subject: &VerifyingKey, nb, na| {
            issue_warrant(cert, key, subject, "svc", &any(), nb, na)
        };
        let misuse = |r: Result<Certificate>| matches!(r, Err(CryptoError::ApiMisuse(_)));
        // Outside X's window (X: T0..=T0+90d).
        assert!(misuse(issue(
            &w.x_cert,
            &w.x_key,
            &w.node,
            T0.plus_seconds(-1),
            end
        )));
        assert!(misuse(issue(
            &w.x_cert,
            &w.x_key,
            &w.node,
            T0,
            T0.plus_seconds(91 * DAY_S)
        )));
        assert!(misuse(issue(&w.x_cert, &w.x_key, &w.node, end, T0)));
        // Delegating to itself.
        assert!(misuse(issue(
            &w.x_cert,
            &w.x_key,
            &w.x_key.verifying_key(),
            T0,
            end
        )));
        // The CA itself.
        let ca_key = SigningKey::from_seed(&[1; 32]);
        assert!(misuse(issue(w.ca.certificate(), &ca_key, &w.node, T0, end)));
        // A key that is not X's.
        assert!(matches!(
            issue(
                &w.x_cert,
                &SigningKey::from_seed(&[9; 32]),
                &w.node,
                T0,
                end
            ),
            Err(CryptoError::WrongKey(_))
        ));
        // Bad terms and names.
        assert!(misuse(issue_warrant(
            &w.x_cert,
            &w.x_key,
            &w.node,
            "svc",
            &names(&[]),
            T0,
            end
        )));
        assert!(misuse(issue_warrant(
            &w.x_cert,
            &w.x_key,
            &w.node,
            "",
            &any(),
            T0,
            end
        )));
    }

    #[test]
    fn warrant_delegating_to_its_issuers_key_is_refused() {
        let w = world();
        let value = any().to_der().unwrap();
        let selfie = ca::issue_by_end_entity(
            &w.x_cert,
            &w.x_key,
            "svc",
            &w.x_key.verifying_key(),
            ROLE_WARRANT,
            T0,
            T0.plus_seconds(DAY_S),
            &[(OID_WARRANT, &value, true)],
        )
        .unwrap();
        assert!(matches!(
            check_warrant(&selfie, &w.x_cert, w.ca.certificate(), T0),
            Err(CryptoError::WrongKey(_))
        ));
    }

    #[test]
    fn party_certificate_carries_a_bls_key() {
        let w = world();
        let key = [0xab; BLS_KEY_LEN];
        let value = bls_key_extension(&key).unwrap();
        assert_eq!(hex::encode(&value), format!("0460{}", "ab".repeat(96)));
        let party = SigningKey::from_seed(&[6; 32]);
        let cert =
            w.ca.issue(
                "customer-7",
                &party.verifying_key(),
                "customer",
                T0,
                T0.plus_seconds(DAY_S),
                &[(OID_BLS_KEY, &value, false)],
            )
            .unwrap();
        let back = Certificate::from_der(cert.as_der()).unwrap();
        back.verify_issued_by(w.ca.certificate(), T0).unwrap();
        assert!(!back.extension_is_critical(OID_BLS_KEY).unwrap());
        assert_eq!(certificate_bls_key(&back).unwrap(), Some(key));
        assert_eq!(certificate_bls_key(&w.x_cert).unwrap(), None);
        // Wrong length, or not an OCTET STRING, is malformed.
        for bad in [&[0x04, 0x01, 0x00][..], &[0x05, 0x00][..]] {
            let cert =
                w.ca.issue(
                    "customer-8",
                    &party.verifying_key(),
                    "customer",
                    T0,
                    T0.plus_seconds(DAY_S),
                    &[(OID_BLS_KEY, bad, false)],
                )
                .unwrap();
            assert!(matches!(
                certificate_bls_key(&cert),
                Err(CryptoError::Malformed(_))
            ));
        }
    }
}
