//! A node certificate authority: Ed25519 X.509 v3 certificates, issued and checked.
//!
//! [`CertificateAuthority`] holds a self-signed CA certificate and its Ed25519 key and issues
//! end-entity certificates with `x509-cert`'s builder, signing directly with the dalek key.
//! [`Certificate::verify_issued_by`] is the matching check: Ed25519 signature over the exact TBS
//! bytes with the issuer's key, issuer name, validity window at a caller-supplied `now`, and
//! `basicConstraints cA=TRUE` (plus `keyCertSign` if `keyUsage` is present) on the issuer.
//!
//! Certificate profile (our own [`BuilderProfile`]; the CA/B Forum `Root` profile demands C, O
//! and CN in the subject, which a node CA does not have):
//! * CA: subject `CN=<name>`, self-signed; `basicConstraints` critical `cA=TRUE,
//!   pathLen=0` (it issues end-entity certificates only); `keyUsage` critical `keyCertSign,
//!   cRLSign`; subject and authority key identifiers (SHA-1 of the key, RFC 5280 method 1).
//! * End entity: subject `OU=<role>, CN=<name>`; `basicConstraints` critical `cA=FALSE`;
//!   `keyUsage` critical `digitalSignature`; key identifiers; then the caller's extensions.
//!   TLS certificates add `subjectAltName` (DNS/IP) and `extKeyUsage serverAuth, clientAuth`.
//! * Serial: 17 random bytes (CA/B ballot 164); times have one-second resolution (sub-second
//!   parts of a [`Timestamp`] are dropped), encoded as UTCTime through 2049.
//!
//! Key decisions: the role lives in the subject's `organizationalUnitName`, not a private
//! extension, because we own no IANA enterprise arc to put a private OID under, and an OU is
//! visible in every certificate viewer while being covered by the same signature. Parsed
//! certificates must be canonical DER (re-encoding gives the same bytes), so the TBS bytes we
//! verify are exactly the bytes that were signed. Time is an argument; nothing reads the clock.
//!
//! End entities can sign certificates too: [`super::warrant`] builds proxy-signing warrants
//! with the crate-internal `issue_by_end_entity` and checks them with
//! `Certificate::verify_signature_with`, reusing this profile.
//!
//! Rejected: `rcgen` (would need the key exported to PKCS#8 and re-imported, and its parser
//! story is separate); `webpki` for the check (it cannot express our roles or the
//! end-entity-signed warrant chains). Not checked here: revocation, name constraints, and
//! critical extensions other than the standard ones above (callers that add critical
//! extensions check them with [`Certificate::extension`] and
//! [`Certificate::critical_extension_oids`]).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::{Any, AnyRef, GeneralizedTime, Ia5String, OctetString};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode, Tag};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

use super::keys::{Signature, SigningKey, VerifyingKey};
use super::memo::Memo;
use super::{CryptoError, Result};
use crate::secret::Secret;
use crate::time::Timestamp;

/// `id-Ed25519` (RFC 8410).
pub const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const OID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// The role written into TLS certificates made by [`CertificateAuthority::issue_tls`].
pub const ROLE_TLS: &str = "tls";
/// Longest common name or role (X.520 upper bound `ub-common-name`).
pub const NAME_LEN_MAX: usize = 64;

/// A caller-supplied extension: `(OID in dotted form, DER-encoded extnValue, critical)`.
pub type ExtraExtension<'a> = (&'a str, &'a [u8], bool);

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

fn x509_time(t: Timestamp) -> Result<Time> {
    let secs = u64::try_from(t.as_micros().div_euclid(1_000_000))
        .map_err(|_| CryptoError::ApiMisuse("certificate times must not be before 1970"))?;
    let time = GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
        .map_err(|_| CryptoError::ApiMisuse("certificate times must be before year 10000"))?;
    Ok(Time::GeneralTime(time))
}

/// `t` rounded down to a whole second, the resolution of certificate times.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp(t.as_micros() - t.as_micros().rem_euclid(1_000_000))
}

fn timestamp(t: &Time) -> Timestamp {
    Timestamp(i64::try_from(t.to_unix_duration().as_micros()).unwrap_or(i64::MAX))
}

fn der_err(what: &'static str) -> impl Fn(x509_cert::der::Error) -> CryptoError {
    move |e| CryptoError::malformed(what, e)
}

fn check_name(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.chars().count() > NAME_LEN_MAX
        || value.chars().any(char::is_control)
    {
        return Err(CryptoError::ApiMisuse(what));
    }
    Ok(())
}

/// A distinguished name from `(attribute, UTF8String value)` pairs, most significant first.
fn build_name(attributes: &[(ObjectIdentifier, &str)]) -> Result<Name> {
    let mut rdns = RdnSequence::default();
    for (oid, value) in attributes {
        let atv = AttributeTypeAndValue {
            oid: *oid,
            value: Any::new(Tag::Utf8String, value.as_bytes()).map_err(der_err("name"))?,
        };
        rdns.push(RelativeDistinguishedName::try_from(vec![atv]).map_err(der_err("name"))?);
    }
    // `Name` has no public constructor from an `RdnSequence`; both share one DER encoding.
    let der = rdns.to_der().map_err(der_err("name"))?;
    Name::from_der(&der).map_err(der_err("name"))
}

// ---------------------------------------------------------------------------------------------
// Builder profile
// ---------------------------------------------------------------------------------------------

/// Our certificate profile (see the module docs).
struct TallyProfile {
    subject: Name,
    /// `None` for the self-signed CA certificate.
    issuer: Option<Name>,
    is_ca: bool,
    extra: Vec<Extension>,
}

impl BuilderProfile for TallyProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        self.issuer.clone().unwrap_or_else(|| subject.clone())
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut extensions: Vec<Extension> = Vec::new();
        let constraints = BasicConstraints {
            ca: self.is_ca,
            path_len_constraint: if self.is_ca { Some(0) } else { None },
        };
        extensions.push(constraints.to_extension(tbs.subject(), &extensions)?);
        let usage = if self.is_ca {
            KeyUsages::KeyCertSign | KeyUsages::CRLSign
        } else {
            KeyUsages::DigitalSignature.into()
        };
        extensions.push(KeyUsage(usage).to_extension(tbs.subject(), &extensions)?);
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        extensions.push(ski.to_extension(tbs.subject(), &extensions)?);
        let issuer_ki = SubjectKeyIdentifier::try_from(issuer_spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(issuer_ki.0),
            ..Default::default()
        };
        extensions.push(aki.to_extension(tbs.subject(), &extensions)?);
        extensions.extend(self.extra.iter().cloned());
        Ok(extensions)
    }
}

/// OIDs the profile always sets; callers may not add them again.
fn reserved_extension(oid: &ObjectIdentifier) -> bool {
    [
        BasicConstraints::OID,
        KeyUsage::OID,
        SubjectKeyIdentifier::OID,
        AuthorityKeyIdentifier::OID,
    ]
    .contains(oid)
}

fn custom_extensions(extra: &[ExtraExtension<'_>]) -> Result<Vec<Extension>> {
    let mut out: Vec<Extension> = Vec::with_capacity(extra.len());
    for (oid_text, value_der, critical) in extra {
        let oid = ObjectIdentifier::new(oid_text)
            .map_err(|_| CryptoError::ApiMisuse("extension OID is not a dotted OID"))?;
        if reserved_extension(&oid) {
            return Err(CryptoError::ApiMisuse(
                "extension is set by the CA profile itself",
            ));
        }
        if out.iter().any(|e| e.extn_id == oid) {
            return Err(CryptoError::ApiMisuse("duplicate extension OID"));
        }
        AnyRef::from_der(value_der)
            .map_err(|_| CryptoError::ApiMisuse("extension value must be one DER element"))?;
        out.push(Extension {
            extn_id: oid,
            critical: *critical,
            extn_value: OctetString::new(*value_der).map_err(der_err("extension"))?,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Certificate
// ---------------------------------------------------------------------------------------------

/// A parsed X.509 certificate together with its exact DER bytes. Immutable, so clones share
/// both.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    inner: Arc<x509_cert::Certificate>,
    der: Arc<[u8]>,
}

/// Most certificates [`Certificate::from_der`] keeps parsed (a few KiB each).
pub const PARSED_MAX: usize = 1024;

/// Certificates parsed before, by the SHA-256 of their DER. Parsing and the canonical-DER
/// check cost tens of microseconds, and the node parses the same parties' certificates and
/// warrants at every step of every receipt. A certificate is public and its bytes decide its
/// parse, so a hit is what parsing again would give; only successful parses are kept, at
/// most [`PARSED_MAX`], and the memo is emptied when full.
static PARSED: Memo<[u8; 32], Certificate> = Memo::new(PARSED_MAX);

impl Certificate {
    fn from_built(inner: x509_cert::Certificate) -> Result<Certificate> {
        let der = inner.to_der().map_err(der_err("certificate"))?;
        Ok(Certificate {
            inner: Arc::new(inner),
            der: der.into(),
        })
    }

    /// Parses DER; the input must be canonical DER (it re-encodes to the same bytes).
    pub fn from_der(der: &[u8]) -> Result<Certificate> {
        PARSED.get_or(super::kdf::sha256(der), || {
            let inner =
                x509_cert::Certificate::from_der(der).map_err(der_err("certificate DER"))?;
            let again = inner.to_der().map_err(der_err("certificate DER"))?;
            if again != der {
                return Err(CryptoError::Malformed(
                    "certificate is not canonical DER".into(),
                ));
            }
            Ok(Certificate {
                inner: Arc::new(inner),
                der: der.into(),
            })
        })
    }

    /// The DER bytes.
    pub fn to_der(&self) -> Vec<u8> {
        self.der.to_vec()
    }

    /// The DER bytes, borrowed.
    pub fn as_der(&self) -> &[u8] {
        &self.der
    }

    /// Parses one PEM block labelled `CERTIFICATE`.
    pub fn from_pem(pem: &str) -> Result<Certificate> {
        let (label, der) = x509_cert::der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| CryptoError::malformed("certificate PEM", e))?;
        if label != "CERTIFICATE" {
            return Err(CryptoError::Malformed(format!(
                "expected a CERTIFICATE PEM, got {label}"
            )));
        }
        Certificate::from_der(&der)
    }

    /// PEM with label `CERTIFICATE` and LF line endings.
    pub fn to_pem(&self) -> String {
        // Invariant: the label is a valid constant and the DER is a few hundred bytes, far
        // below the encoder's length limit, so encoding cannot fail.
        x509_cert::der::pem::encode_string(
            "CERTIFICATE",
            x509_cert::der::pem::LineEnding::LF,
            &self.der,
        )
        .expect("PEM-encoding a certificate cannot fail")
    }

    /// Lowercase hex SHA-256 of the DER (for pinning and logs).
    pub fn fingerprint(&self) -> String {
        hex::encode(super::kdf::sha256(&self.der))
    }

    /// The subject's first common name, if any.
    pub fn subject_common_name(&self) -> Option<String> {
        let cn = self
            .inner
            .tbs_certificate()
            .subject()
            .common_name()
            .ok()??;
        Some(cn.value().into_owned())
    }

    /// The issuer's first common name, if any (for a warrant: the name of the end entity that
    /// signed it).
    pub fn issuer_common_name(&self) -> Option<String> {
        let cn = self.inner.tbs_certificate().issuer().common_name().ok()??;
        Some(cn.value().into_owned())
    }

    /// The subject's organizational unit, which carries the role in certificates we issue.
    pub fn role(&self) -> Option<String> {
        let ou = self
            .inner
            .tbs_certificate()
            .subject()
            .organization_unit()
            .ok()??;
        Some(ou.value().into_owned())
    }

    /// The subject's Ed25519 public key.
    pub fn public_key(&self) -> Result<VerifyingKey> {
        let spki = self.inner.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != OID_ED25519 || spki.algorithm.parameters.is_some() {
            return Err(CryptoError::Malformed("subject key is not Ed25519".into()));
        }
        let raw = spki.subject_public_key.as_bytes().ok_or_else(|| {
            CryptoError::Malformed("subject key bit string is not octet aligned".into())
        })?;
        VerifyingKey::from_slice(raw)
    }

    /// The serial number as lowercase hex of its DER integer bytes.
    pub fn serial_hex(&self) -> String {
        hex::encode(self.inner.tbs_certificate().serial_number().as_bytes())
    }

    /// Start of validity (inclusive), whole seconds.
    pub fn not_before(&self) -> Timestamp {
        timestamp(&self.inner.tbs_certificate().validity().not_before)
    }

    /// End of validity (inclusive), whole seconds.
    pub fn not_after(&self) -> Timestamp {
        timestamp(&self.inner.tbs_certificate().validity().not_after)
    }

    /// The DER `extnValue` of the extension with dotted OID `oid`, if present.
    pub fn extension(&self, oid: &str) -> Result<Option<Vec<u8>>> {
        let oid = ObjectIdentifier::new(oid)
            .map_err(|_| CryptoError::ApiMisuse("extension OID is not a dotted OID"))?;
        Ok(self
            .find_extension(&oid)
            .map(|e| e.extn_value.as_bytes().to_vec()))
    }

    /// Whether the extension with dotted OID `oid` is present and marked critical.
    pub fn extension_is_critical(&self, oid: &str) -> Result<bool> {
        let oid = ObjectIdentifier::new(oid)
            .map_err(|_| CryptoError::ApiMisuse("extension OID is not a dotted OID"))?;
        Ok(self.find_extension(&oid).is_some_and(|e| e.critical))
    }

    /// Dotted OIDs of all extensions marked critical, in certificate order.
    pub fn critical_extension_oids(&self) -> Vec<String> {
        self.inner
            .tbs_certificate()
            .extensions()
            .map(|exts| {
                exts.iter()
                    .filter(|e| e.critical)
                    .map(|e| e.extn_id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn find_extension(&self, oid: &ObjectIdentifier) -> Option<&Extension> {
        self.inner
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| &e.extn_id == oid)
    }

    /// Whether `basicConstraints` says `cA = TRUE`.
    pub fn is_ca(&self) -> bool {
        matches!(
            self.inner
                .tbs_certificate()
                .get_extension::<BasicConstraints>(),
            Ok(Some((_, BasicConstraints { ca: true, .. })))
        )
    }

    /// DNS names in `subjectAltName`.
    pub fn dns_names(&self) -> Vec<String> {
        self.alt_names(|n| match n {
            GeneralName::DnsName(d) => Some(d.to_string()),
            _ => None,
        })
    }

    /// The `uniformResourceIdentifier` entries of `subjectAltName` (e.g. `mailto:` or `tel:`
    /// addresses of an end entity's second channel).
    pub fn uri_names(&self) -> Vec<String> {
        self.alt_names(|n| match n {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
    }

    /// The `subjectAltName` entries `pick` keeps.
    fn alt_names(&self, pick: impl Fn(&GeneralName) -> Option<String>) -> Vec<String> {
        match self
            .inner
            .tbs_certificate()
            .get_extension::<SubjectAltName>()
        {
            Ok(Some((_, san))) => san.0.iter().filter_map(pick).collect(),
            _ => Vec::new(),
        }
    }

    /// `NotYetValid` / `Expired` unless `now` lies in this certificate's validity window.
    pub(crate) fn check_validity(&self, now: Timestamp) -> Result<()> {
        let (not_before, not_after) = (self.not_before(), self.not_after());
        if now < not_before {
            return Err(CryptoError::NotYetValid { not_before, now });
        }
        if now > not_after {
            return Err(CryptoError::Expired { not_after, now });
        }
        Ok(())
    }

    /// Whether this certificate's issuer name equals `issuer`'s subject name (exact DER
    /// equality of the two names).
    pub fn issuer_name_is_subject_of(&self, issuer: &Certificate) -> bool {
        self.inner.tbs_certificate().issuer() == issuer.inner.tbs_certificate().subject()
    }

    /// Checks only the signature: the algorithm is Ed25519 (outer and TBS agree, no
    /// parameters) and the signature over the exact TBS bytes verifies strictly under `key`.
    /// Names, validity and constraints are the caller's business (see
    /// [`Certificate::verify_issued_by`] and [`super::warrant::check_warrant`]).
    pub(crate) fn verify_signature_with(&self, key: &VerifyingKey) -> Result<()> {
        let tbs = self.inner.tbs_certificate();
        let outer = self.inner.signature_algorithm();
        if outer.oid != OID_ED25519 || outer.parameters.is_some() || tbs.signature() != outer {
            return Err(CryptoError::Malformed(
                "signature algorithm is not Ed25519".into(),
            ));
        }
        let signature = self
            .inner
            .signature()
            .as_bytes()
            .ok_or_else(|| {
                CryptoError::Malformed("signature bit string is not octet aligned".into())
            })
            .and_then(Signature::from_slice)?;
        let tbs_der = tbs.to_der().map_err(der_err("TBS certificate"))?;
        key.dalek()
            .verify_strict(
                &tbs_der,
                &ed25519_dalek::Signature::from_bytes(&signature.to_bytes()),
            )
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Checks that `issuer` issued this certificate and that both are valid at `now`:
    /// `issuer` is a CA, this certificate's issuer name is `issuer`'s subject, the Ed25519
    /// signature over the TBS bytes verifies (strictly) under `issuer`'s key, and `now` lies in
    /// both validity windows. A self-signed CA certificate passes with itself as `issuer`.
    pub fn verify_issued_by(&self, issuer: &Certificate, now: Timestamp) -> Result<()> {
        let issuer_tbs = issuer.inner.tbs_certificate();
        if !issuer.is_ca() {
            return Err(CryptoError::IssuerNotCa);
        }
        match issuer_tbs.get_extension::<KeyUsage>() {
            Ok(None) => {}
            Ok(Some((_, usage))) if usage.key_cert_sign() => {}
            _ => return Err(CryptoError::IssuerNotCa),
        }
        if !self.issuer_name_is_subject_of(issuer) {
            return Err(CryptoError::UnknownIssuer);
        }
        self.verify_signature_with(&issuer.public_key()?)?;
        issuer.check_validity(now)?;
        self.check_validity(now)
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject_common_name", &self.subject_common_name())
            .field("role", &self.role())
            .field("serial", &self.serial_hex())
            .field("not_before", &self.not_before())
            .field("not_after", &self.not_after())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate authority
// ---------------------------------------------------------------------------------------------

/// A CA certificate with its private key.
#[derive(Debug)]
pub struct CertificateAuthority {
    key: SigningKey,
    cert: Certificate,
}

/// A certificate and the private key it certifies (e.g. a node's TLS identity).
#[derive(Debug)]
pub struct IssuedIdentity {
    /// The certificate, issued by the CA.
    pub certificate: Certificate,
    /// The subject's private key, freshly generated.
    pub key: SigningKey,
}

impl IssuedIdentity {
    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Secret<String>> {
        self.key.to_pkcs8_pem()
    }
}

impl CertificateAuthority {
    /// A new CA with a fresh key and a self-signed certificate valid from `now` for
    /// `validity_days`.
    pub fn generate(common_name: &str, now: Timestamp, validity_days: u32) -> Result<Self> {
        CertificateAuthority::generate_with_key(
            SigningKey::generate(),
            common_name,
            now,
            validity_days,
        )
    }

    /// Like [`CertificateAuthority::generate`] with a given key (for deterministic tests).
    pub fn generate_with_key(
        key: SigningKey,
        common_name: &str,
        now: Timestamp,
        validity_days: u32,
    ) -> Result<Self> {
        check_name(
            "CA common name must be 1..=64 printable characters",
            common_name,
        )?;
        if validity_days == 0 {
            return Err(CryptoError::ApiMisuse(
                "CA validity must be at least one day",
            ));
        }
        let not_after = now.plus_seconds(i64::from(validity_days) * 86_400);
        let profile = TallyProfile {
            subject: build_name(&[(OID_COMMON_NAME, common_name)])?,
            issuer: None,
            is_ca: true,
            extra: Vec::new(),
        };
        let cert = build(profile, key.verifying_key(), &key, now, not_after)?;
        Ok(CertificateAuthority { key, cert })
    }

    /// Pairs a CA certificate with its key; the key must match and the certificate must be a
    /// CA certificate.
    pub fn from_parts(cert: Certificate, key: SigningKey) -> Result<Self> {
        if cert.public_key()? != key.verifying_key() {
            return Err(CryptoError::WrongKey(
                "private key does not match the CA certificate",
            ));
        }
        if !cert.is_ca() {
            return Err(CryptoError::IssuerNotCa);
        }
        Ok(CertificateAuthority { key, cert })
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The CA's public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Issues an end-entity certificate for `subject_public_key` with subject
    /// `OU=<role>, CN=<subject_common_name>`, valid from `not_before` to `not_after`
    /// (inclusive, which must lie inside the CA's own validity), carrying `extra_extensions`.
    pub fn issue(
        &self,
        subject_common_name: &str,
        subject_public_key: &VerifyingKey,
        role: &str,
        not_before: Timestamp,
        not_after: Timestamp,
        extra_extensions: &[ExtraExtension<'_>],
    ) -> Result<Certificate> {
        let extra = custom_extensions(extra_extensions)?;
        self.issue_with(
            subject_common_name,
            subject_public_key,
            role,
            not_before,
            not_after,
            extra,
        )
    }

    /// Like [`CertificateAuthority::issue`], with `subjectAltName` listing `uris` (ASCII URIs
    /// such as `mailto:alice@example.com` or `tel:+4915112345678`).
    pub fn issue_with_uris(
        &self,
        subject_common_name: &str,
        subject_public_key: &VerifyingKey,
        role: &str,
        not_before: Timestamp,
        not_after: Timestamp,
        uris: &[&str],
    ) -> Result<Certificate> {
        let mut names = Vec::with_capacity(uris.len());
        for uri in uris {
            if uri.is_empty() || uri.len() > 512 || !uri.contains(':') {
                return Err(CryptoError::ApiMisuse(
                    "URIs must be 1..=512 characters with a scheme",
                ));
            }
            let ia5 =
                Ia5String::new(*uri).map_err(|_| CryptoError::ApiMisuse("URIs must be ASCII"))?;
            names.push(GeneralName::UniformResourceIdentifier(ia5));
        }
        let subject = build_name(&[
            (OID_ORGANIZATIONAL_UNIT, role),
            (OID_COMMON_NAME, subject_common_name),
        ])?;
        let extra = vec![
            SubjectAltName(names)
                .to_extension(&subject, &[])
                .map_err(der_err("subjectAltName"))?,
        ];
        self.issue_with(
            subject_common_name,
            subject_public_key,
            role,
            not_before,
            not_after,
            extra,
        )
    }

    fn issue_with(
        &self,
        common_name: &str,
        subject_key: &VerifyingKey,
        role: &str,
        not_before: Timestamp,
        not_after: Timestamp,
        extra: Vec<Extension>,
    ) -> Result<Certificate> {
        end_entity(
            &self.cert,
            &self.key,
            common_name,
            subject_key,
            role,
            not_before,
            not_after,
            extra,
        )
    }

    /// Issues a TLS certificate (role [`ROLE_TLS`]) for a fresh Ed25519 key, with
    /// `subjectAltName` = `dns_names` + `ip_addrs` (at least one) and `extKeyUsage` serverAuth
    /// and clientAuth, so the same identity serves HTTPS and mutual TLS. rustls accepts Ed25519.
    pub fn issue_tls(
        &self,
        common_name: &str,
        dns_names: &[&str],
        ip_addrs: &[IpAddr],
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<IssuedIdentity> {
        if dns_names.is_empty() && ip_addrs.is_empty() {
            return Err(CryptoError::ApiMisuse(
                "a TLS certificate needs a DNS name or IP address",
            ));
        }
        let mut names = Vec::with_capacity(dns_names.len() + ip_addrs.len());
        for dns in dns_names {
            if dns.is_empty() || dns.len() > 253 || dns.contains(char::is_whitespace) {
                return Err(CryptoError::ApiMisuse(
                    "DNS names must be 1..=253 characters",
                ));
            }
            let ia5 = Ia5String::new(dns)
                .map_err(|_| CryptoError::ApiMisuse("DNS names must be ASCII (use punycode)"))?;
            names.push(GeneralName::DnsName(ia5));
        }
        names.extend(ip_addrs.iter().copied().map(GeneralName::from));
        let subject = build_name(&[(OID_COMMON_NAME, common_name)])?;
        let extra = vec![
            SubjectAltName(names)
                .to_extension(&subject, &[])
                .map_err(der_err("subjectAltName"))?,
            ExtendedKeyUsage(vec![OID_KP_SERVER_AUTH, OID_KP_CLIENT_AUTH])
                .to_extension(&subject, &[])
                .map_err(der_err("extKeyUsage"))?,
        ];
        let key = SigningKey::generate();
        let certificate = self.issue_with(
            common_name,
            &key.verifying_key(),
            ROLE_TLS,
            not_before,
            not_after,
            extra,
        )?;
        Ok(IssuedIdentity { certificate, key })
    }

    /// `(certificate PEM, PKCS#8 private key PEM)`.
    pub fn to_pem(&self) -> Result<(String, Secret<String>)> {
        Ok((self.cert.to_pem(), self.key.to_pkcs8_pem()?))
    }

    /// From the two PEM documents written by [`CertificateAuthority::to_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        CertificateAuthority::from_parts(
            Certificate::from_pem(cert_pem)?,
            SigningKey::from_pkcs8_pem(key_pem)?,
        )
    }

    /// Writes the certificate PEM and the key PEM (mode 0600 on Unix). Refuses to overwrite
    /// existing files, so a CA key is never clobbered by accident.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        let (cert_pem, key_pem) = self.to_pem()?;
        write_new_file(key_path, key_pem.expose().as_bytes(), 0o600)?;
        write_new_file(cert_path, cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Reads the files written by [`CertificateAuthority::save`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = std::fs::read_to_string(cert_path)?;
        let key_pem = Secret::new(std::fs::read_to_string(key_path)?);
        CertificateAuthority::from_pem(&cert_pem, key_pem.expose())
    }
}

/// Issues an end-entity certificate (our profile, subject `OU=<role>, CN=<common_name>`)
/// signed by the *end entity* `issuer` with its key `issuer_key`: the issuer name is
/// `issuer`'s subject and the authority key identifier is `issuer_key`'s. Used for warrants
/// ([`super::warrant`]); the window must lie inside `issuer`'s own validity, and `issuer_key`
/// must be the key `issuer` certifies ([`CryptoError::WrongKey`] otherwise).
#[allow(clippy::too_many_arguments)] // One flat call mirroring `CertificateAuthority::issue`.
pub(crate) fn issue_by_end_entity(
    issuer: &Certificate,
    issuer_key: &SigningKey,
    subject_common_name: &str,
    subject_public_key: &VerifyingKey,
    role: &str,
    not_before: Timestamp,
    not_after: Timestamp,
    extra_extensions: &[ExtraExtension<'_>],
) -> Result<Certificate> {
    if issuer.public_key()? != issuer_key.verifying_key() {
        return Err(CryptoError::WrongKey(
            "signing key does not match the issuer certificate",
        ));
    }
    let extra = custom_extensions(extra_extensions)?;
    end_entity(
        issuer,
        issuer_key,
        subject_common_name,
        subject_public_key,
        role,
        not_before,
        not_after,
        extra,
    )
}

/// The shared end-entity path: checks names and that the window lies inside `issuer`'s,
/// then signs with `signer` (which must be `issuer`'s key; callers ensure it).
#[allow(clippy::too_many_arguments)] // Private plumbing behind two public entry points.
fn end_entity(
    issuer: &Certificate,
    signer: &SigningKey,
    common_name: &str,
    subject_key: &VerifyingKey,
    role: &str,
    not_before: Timestamp,
    not_after: Timestamp,
    extra: Vec<Extension>,
) -> Result<Certificate> {
    check_name(
        "subject common name must be 1..=64 printable characters",
        common_name,
    )?;
    check_name("role must be 1..=64 printable characters", role)?;
    if whole_seconds(not_after) > issuer.not_after()
        || whole_seconds(not_before) < issuer.not_before()
    {
        return Err(CryptoError::ApiMisuse(
            "certificate would outlive or predate its issuer",
        ));
    }
    let profile = TallyProfile {
        subject: build_name(&[
            (OID_ORGANIZATIONAL_UNIT, role),
            (OID_COMMON_NAME, common_name),
        ])?,
        issuer: Some(issuer.inner.tbs_certificate().subject().clone()),
        is_ca: false,
        extra,
    };
    build(profile, *subject_key, signer, not_before, not_after)
}

/// Signs the certificate described by `profile` for `subject_key` with `signer`.
fn build(
    profile: TallyProfile,
    subject_key: VerifyingKey,
    signer: &SigningKey,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<Certificate> {
    if not_after < not_before {
        return Err(CryptoError::ApiMisuse("not_after is before not_before"));
    }
    let validity = Validity::new(x509_time(not_before)?, x509_time(not_after)?);
    let spki = SubjectPublicKeyInfo::from_key(subject_key.dalek())
        .map_err(|e| CryptoError::malformed("subject public key", e))?;
    let serial = SerialNumber::generate(&mut rand::rng());
    let builder = CertificateBuilder::new(profile, serial, validity, spki)
        .map_err(|e| CryptoError::malformed("certificate builder", e))?;
    let inner = builder
        .build::<_, ed25519_dalek::Signature>(signer.dalek())
        .map_err(|e| CryptoError::malformed("certificate builder", e))?;
    Certificate::from_built(inner)
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    const DAY_S: i64 = 86_400;
    /// 2026-01-01T00:00:00Z.
    const T0: Timestamp = Timestamp(1_767_225_600_000_000);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate_with_key(
            SigningKey::from_seed(&[1; 32]),
            "Tally node CA",
            T0,
            365,
        )
        .unwrap()
    }

    fn leaf(ca: &CertificateAuthority) -> (SigningKey, Certificate) {
        let key = SigningKey::from_seed(&[2; 32]);
        let cert = ca
            .issue(
                "merchant-42",
                &key.verifying_key(),
                "merchant",
                T0,
                T0.plus_seconds(30 * DAY_S),
                &[],
            )
            .unwrap();
        (key, cert)
    }

    #[test]
    fn ca_certificate_is_a_self_signed_ca() {
        let ca = ca();
        let cert = ca.certificate();
        assert!(cert.is_ca());
        assert_eq!(cert.subject_common_name().as_deref(), Some("Tally node CA"));
        assert_eq!(cert.role(), None);
        assert_eq!(cert.public_key().unwrap(), ca.verifying_key());
        assert_eq!(cert.not_before(), T0);
        assert_eq!(cert.not_after(), T0.plus_seconds(365 * DAY_S));
        cert.verify_issued_by(cert, T0).unwrap();
        // keyUsage keyCertSign + cRLSign (DER BIT STRING 03 02 01 06) and it is critical.
        assert_eq!(
            cert.extension("2.5.29.15").unwrap().unwrap(),
            [0x03, 0x02, 0x01, 0x06]
        );
        assert!(cert.extension_is_critical("2.5.29.15").unwrap());
        // basicConstraints cA=TRUE, pathLen=0, critical.
        assert_eq!(
            cert.extension("2.5.29.19").unwrap().unwrap(),
            [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]
        );
        assert!(cert.extension_is_critical("2.5.29.19").unwrap());
        assert_eq!(cert.serial_hex().len() % 2, 0);
        assert!(cert.serial_hex().len() >= 34);
    }

    #[test]
    fn issued_certificate_carries_subject_role_key_and_window() {
        let ca = ca();
        let (key, cert) = leaf(&ca);
        assert!(!cert.is_ca());
        assert_eq!(cert.subject_common_name().as_deref(), Some("merchant-42"));
        assert_eq!(cert.role().as_deref(), Some("merchant"));
        assert_eq!(cert.public_key().unwrap(), key.verifying_key());
        assert_eq!(cert.not_before(), T0);
        assert_eq!(cert.not_after(), T0.plus_seconds(30 * DAY_S));
        assert_ne!(cert.serial_hex(), ca.certificate().serial_hex());
        // basicConstraints cA=FALSE encodes as an empty SEQUENCE.
        assert_eq!(cert.extension("2.5.29.19").unwrap().unwrap(), [0x30, 0x00]);
        // keyUsage digitalSignature.
        assert_eq!(
            cert.extension("2.5.29.15").unwrap().unwrap(),
            [0x03, 0x02, 0x07, 0x80]
        );
        cert.verify_issued_by(ca.certificate(), T0.plus_seconds(DAY_S))
            .unwrap();
    }

    #[test]
    fn parsing_again_gives_the_same_certificate_and_refuses_the_same_bytes() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        for _ in 0..2 {
            let again = Certificate::from_der(cert.as_der()).unwrap();
            assert!(again == cert);
            assert_eq!(again.to_der(), cert.to_der());
            assert_eq!(again.serial_hex(), cert.serial_hex());
        }
        // A changed signature byte parses to another certificate, which does not verify;
        // trailing bytes are refused, the first time and the second.
        let mut changed = cert.to_der();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        for _ in 0..2 {
            let other = Certificate::from_der(&changed).unwrap();
            assert!(other != cert);
            assert!(other.verify_issued_by(ca.certificate(), T0).is_err());
        }
        let mut longer = cert.to_der();
        longer.push(0);
        for _ in 0..2 {
            assert!(Certificate::from_der(&longer).is_err());
        }
    }

    #[test]
    fn validity_window_is_inclusive_and_enforced() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        cert.verify_issued_by(ca.certificate(), T0).unwrap();
        cert.verify_issued_by(ca.certificate(), T0.plus_seconds(30 * DAY_S))
            .unwrap();
        assert!(matches!(
            cert.verify_issued_by(ca.certificate(), T0.plus_micros(-1)),
            Err(CryptoError::NotYetValid { .. })
        ));
        assert!(matches!(
            cert.verify_issued_by(ca.certificate(), T0.plus_seconds(30 * DAY_S).plus_micros(1)),
            Err(CryptoError::Expired { .. })
        ));
    }

    #[test]
    fn sub_second_times_are_truncated() {
        let ca = ca();
        let key = SigningKey::from_seed(&[4; 32]);
        let cert = ca
            .issue(
                "x",
                &key.verifying_key(),
                "r",
                T0.plus_micros(999_999),
                T0.plus_seconds(5).plus_micros(7),
                &[],
            )
            .unwrap();
        assert_eq!(cert.not_before(), T0);
        assert_eq!(cert.not_after(), T0.plus_seconds(5));
    }

    #[test]
    fn a_different_ca_is_an_unknown_issuer_and_a_same_named_one_a_bad_signature() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        let other = CertificateAuthority::generate("Other CA", T0, 365).unwrap();
        assert!(matches!(
            cert.verify_issued_by(other.certificate(), T0),
            Err(CryptoError::UnknownIssuer)
        ));
        let impostor = CertificateAuthority::generate("Tally node CA", T0, 365).unwrap();
        assert!(matches!(
            cert.verify_issued_by(impostor.certificate(), T0),
            Err(CryptoError::BadSignature)
        ));
    }

    #[test]
    fn an_end_entity_cannot_act_as_issuer() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        assert!(matches!(
            cert.verify_issued_by(&cert, T0),
            Err(CryptoError::IssuerNotCa)
        ));
    }

    #[test]
    fn any_flipped_bit_in_the_signed_part_breaks_verification() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        let der = cert.to_der();
        let mut rejected = 0;
        // Flip one bit in every byte; each result must either fail to parse or fail to verify.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let verdict = Certificate::from_der(&bad)
                .and_then(|c| c.verify_issued_by(ca.certificate(), T0.plus_seconds(1)));
            assert!(verdict.is_err(), "flip at byte {i} went unnoticed");
            rejected += 1;
        }
        assert_eq!(rejected, der.len());
    }

    #[test]
    fn pem_and_der_round_trip() {
        let ca = ca();
        let (_, cert) = leaf(&ca);
        let pem = cert.to_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let back = Certificate::from_pem(&pem).unwrap();
        assert_eq!(back, cert);
        assert_eq!(Certificate::from_der(cert.as_der()).unwrap(), cert);
        assert_eq!(back.fingerprint(), cert.fingerprint());
        assert!(matches!(
            Certificate::from_pem("nope"),
            Err(CryptoError::Malformed(_))
        ));
        let key_pem = SigningKey::from_seed(&[1; 32]).to_pkcs8_pem().unwrap();
        assert!(matches!(
            Certificate::from_pem(key_pem.expose()),
            Err(CryptoError::Malformed(_))
        ));
        // Trailing bytes after the DER certificate are refused.
        let mut padded = cert.to_der();
        padded.push(0);
        assert!(Certificate::from_der(&padded).is_err());
    }

    #[test]
    fn extra_extensions_are_embedded_verbatim() {
        let ca = ca();
        let key = SigningKey::from_seed(&[3; 32]);
        let value = [0x0c, 0x03, b'a', b'b', b'c']; // UTF8String "abc"
        let cert = ca
            .issue(
                "warrant-holder",
                &key.verifying_key(),
                "proxy",
                T0,
                T0.plus_seconds(DAY_S),
                &[("1.3.6.1.5.5.7.1.14", &value, true)],
            )
            .unwrap();
        assert_eq!(
            cert.extension("1.3.6.1.5.5.7.1.14").unwrap().unwrap(),
            value
        );
        assert!(cert.extension_is_critical("1.3.6.1.5.5.7.1.14").unwrap());
        assert_eq!(cert.extension("1.2.3.4").unwrap(), None);
        assert!(matches!(
            cert.extension("not an oid"),
            Err(CryptoError::ApiMisuse(_))
        ));
        cert.verify_issued_by(ca.certificate(), T0).unwrap();
    }

    #[test]
    fn bad_issue_requests_are_refused() {
        let ca = ca();
        let vk = SigningKey::from_seed(&[3; 32]).verifying_key();
        let end = T0.plus_seconds(DAY_S);
        let misuse = |r: Result<Certificate>| matches!(r, Err(CryptoError::ApiMisuse(_)));
        assert!(misuse(ca.issue("", &vk, "r", T0, end, &[])));
        assert!(misuse(ca.issue("x", &vk, "", T0, end, &[])));
        assert!(misuse(ca.issue(&"x".repeat(65), &vk, "r", T0, end, &[])));
        assert!(misuse(ca.issue("x", &vk, "r", end, T0, &[])));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0,
            T0.plus_seconds(400 * DAY_S),
            &[]
        )));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0.plus_seconds(-1),
            end,
            &[]
        )));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0,
            end,
            &[("2.5.29.19", &[0x30, 0x00], true)]
        )));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0,
            end,
            &[("1.2.3", &[0x05], false)]
        )));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0,
            end,
            &[("1.2.3", &[0x05, 0x00, 0x00], false)]
        )));
        assert!(misuse(ca.issue(
            "x",
            &vk,
            "r",
            T0,
            end,
            &[
                ("1.2.3", &[0x05, 0x00], false),
                ("1.2.3", &[0x05, 0x00], false)
            ]
        )));
        assert!(CertificateAuthority::generate("ca", T0, 0).is_err());
        assert!(CertificateAuthority::generate("ca", Timestamp(-1_000_000), 1).is_err());
    }

    #[test]
    fn tls_identity_has_names_and_usages() {
        let ca = ca();
        let id = ca
            .issue_tls(
                "node-1",
                &["node-1.tally.internal", "localhost"],
                &["127.0.0.1".parse().unwrap()],
                T0,
                T0.plus_seconds(DAY_S),
            )
            .unwrap();
        let cert = &id.certificate;
        assert_eq!(cert.role().as_deref(), Some(ROLE_TLS));
        assert_eq!(cert.dns_names(), ["node-1.tally.internal", "localhost"]);
        assert_eq!(cert.public_key().unwrap(), id.key.verifying_key());
        // extKeyUsage = SEQUENCE { serverAuth, clientAuth }.
        assert_eq!(
            hex::encode(cert.extension("2.5.29.37").unwrap().unwrap()),
            "301406082b0601050507030106082b06010505070302"
        );
        cert.verify_issued_by(ca.certificate(), T0).unwrap();
        let key_pem = id.key_pem().unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_pem(key_pem.expose())
                .unwrap()
                .verifying_key(),
            id.key.verifying_key()
        );
        assert!(
            ca.issue_tls("node-1", &[], &[], T0, T0.plus_seconds(DAY_S))
                .is_err()
        );
        assert!(
            ca.issue_tls("node-1", &["bad name"], &[], T0, T0.plus_seconds(DAY_S))
                .is_err()
        );
    }

    #[test]
    fn save_and_load_round_trip_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let ca = ca();
        ca.save(&cert_path, &key_path).unwrap();
        let loaded = CertificateAuthority::load(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.certificate(), ca.certificate());
        assert_eq!(loaded.verifying_key(), ca.verifying_key());
        // The loaded CA issues certificates the original CA certificate accepts.
        let (_, cert) = leaf(&loaded);
        cert.verify_issued_by(ca.certificate(), T0).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = ca.save(&cert_path, &key_path).unwrap_err();
        assert!(
            matches!(err, CryptoError::Io(ref e) if e.kind() == std::io::ErrorKind::AlreadyExists)
        );
    }

    #[test]
    fn ca_key_must_match_its_certificate() {
        let ca = ca();
        let (cert_pem, _) = ca.to_pem().unwrap();
        let wrong = SigningKey::from_seed(&[9; 32]).to_pkcs8_pem().unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(&cert_pem, wrong.expose()),
            Err(CryptoError::WrongKey(_))
        ));
        let (key, leaf_cert) = leaf(&ca);
        assert!(matches!(
            CertificateAuthority::from_parts(leaf_cert, key),
            Err(CryptoError::IssuerNotCa)
        ));
    }
}
