//! The optional PKCS#11 backend of a receipt token: the holder's Ed25519 key is made inside a
//! PKCS#11 token (SoftHSM2, a smart card, an HSM) and never leaves it; `tally` asks the token
//! to sign (`C_Sign`, `CKM_EDDSA`, pure Ed25519) and checks every signature against the
//! certified public key before it is used.
//!
//! Key decisions:
//! * **Only the Ed25519 key moves.** PKCS#11 has no BLS12-381, so the BLS key (fair
//!   exchange), the application key and the slots stay in the token file; the file then
//!   records where the key is (module, slot or token label, the token's serial, the key's
//!   `CKA_ID` and `CKA_LABEL`) instead of the key.
//! * **The PIN is never stored.** It is read at each use from a file or `TALLY_PKCS11_PIN`.
//! * **Same bytes as the software key.** The token signs `domain || msg`, exactly what
//!   [`tally_kernel::crypto::SigningKey::sign`] signs, so a signature from either backend
//!   verifies the same way.
//! * **Curve parameters.** `CKA_EC_PARAMS` is the DER of the RFC 8410 OID 1.3.101.112
//!   (SoftHSM 2.6.1 reads it and the other form); a module that wants only the printable string
//!   `"edwards25519"` of PKCS#11 3.0 gets that on a second try.

use anyhow::{Context, anyhow, bail};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_kernel::Secret;
use tally_kernel::crypto::keys::check_domain;
use tally_kernel::crypto::{Signature, VerifyingKey};

/// The environment variable that may hold the token's user PIN (instead of a PIN file).
pub const PIN_ENV: &str = "TALLY_PKCS11_PIN";

/// `CKA_EC_PARAMS` for Ed25519: DER of the OID 1.3.101.112 (RFC 8410).
const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// `CKA_EC_PARAMS` for Ed25519 in PKCS#11 3.0's other form: PrintableString "edwards25519".
const ED25519_NAME_DER: &[u8] = b"\x13\x0cedwards25519";

/// Where the holder's key lives, as the token file records it. No secret in here.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pkcs11Ref {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The slot id, when the token was chosen by slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// The token's label, when it was chosen by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    /// The token's serial number, checked at each use.
    pub token_serial: String,
    /// The key pair's `CKA_ID`, hex.
    pub key_id: String,
    /// The key pair's `CKA_LABEL`.
    pub key_label: String,
}

/// A logged-in session on the chosen token.
pub struct Token {
    // Dropped before `_ctx`: the session closes, then the module is finalized.
    session: Session,
    slot: Slot,
    serial: String,
    _ctx: Pkcs11,
}

/// The user PIN: from `pin_file` (one line; a trailing newline is not part of it), else from
/// `TALLY_PKCS11_PIN`.
pub fn read_pin(pin_file: Option<&Path>) -> anyhow::Result<Secret<String>> {
    let mut text = match pin_file {
        Some(path) => Secret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the PKCS#11 PIN file {}", path.display()))?,
        ),
        None => match std::env::var(PIN_ENV) {
            Ok(pin) => Secret::new(pin),
            Err(_) => bail!(
                "the token's signing key is in a PKCS#11 token: give its user PIN with \
                 --pkcs11-pin-file FILE or in {PIN_ENV}"
            ),
        },
    };
    // In place: the wiped buffer (its whole capacity) is the only copy.
    let len = text.expose().trim_end_matches(['\r', '\n']).len();
    text.expose_mut().truncate(len);
    if text.expose().is_empty() {
        bail!("the PKCS#11 PIN is empty");
    }
    Ok(text)
}

impl Token {
    /// Loads `module`, picks the token (by slot id, else by label, else the only initialised
    /// token), opens a read-write session and logs in as the user.
    pub fn open(
        module: &Path,
        slot: Option<u64>,
        label: Option<&str>,
        pin: &Secret<String>,
    ) -> anyhow::Result<Token> {
        let ctx = Pkcs11::new(module)
            .with_context(|| format!("loading the PKCS#11 module {}", module.display()))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| anyhow!("initialising the PKCS#11 module: {e}"))?;
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(|e| anyhow!("listing the PKCS#11 slots: {e}"))?;
        let mut found = Vec::new();
        for s in slots {
            let info = ctx
                .get_token_info(s)
                .map_err(|e| anyhow!("reading PKCS#11 slot {}: {e}", s.id()))?;
            let hit = match (slot, label) {
                (Some(id), _) => s.id() == id,
                (None, Some(l)) => info.label() == l,
                (None, None) => true,
            };
            if hit {
                found.push((s, info.serial_number().to_string()));
            }
        }
        let (slot, serial) = match (found.len(), slot, label) {
            (1, _, _) => found.remove(0),
            (0, Some(id), _) => bail!("PKCS#11: no initialised token in slot {id}"),
            (0, None, Some(l)) => bail!("PKCS#11: no initialised token labelled {l:?}"),
            (0, None, None) => bail!("PKCS#11: the module has no initialised token"),
            (n, _, _) => bail!(
                "PKCS#11: {n} tokens match; choose one with --pkcs11-slot or --pkcs11-token-label"
            ),
        };
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| anyhow!("opening a PKCS#11 session: {e}"))?;
        let auth = AuthPin::new(pin.expose().as_str().into());
        session
            .login(UserType::User, Some(&auth))
            .map_err(|e| match e {
                Error::Pkcs11(RvError::PinIncorrect, _) => {
                    anyhow!("the PKCS#11 token refused the PIN: wrong PIN (CKR_PIN_INCORRECT)")
                }
                Error::Pkcs11(RvError::PinLocked, _) => {
                    anyhow!("the PKCS#11 token's user PIN is locked (CKR_PIN_LOCKED)")
                }
                e => anyhow!("logging in to the PKCS#11 token: {e}"),
            })?;
        Ok(Token {
            session,
            slot,
            serial,
            _ctx: ctx,
        })
    }

    /// Opens the token `r` names and checks it is the one the key was made on.
    pub fn open_ref(r: &Pkcs11Ref, pin: &Secret<String>) -> anyhow::Result<Token> {
        let t = Token::open(&r.module, r.slot, r.token_label.as_deref(), pin)?;
        if t.serial != r.token_serial {
            bail!(
                "PKCS#11: the token found has serial {:?}, the token file's key is on {:?}",
                t.serial,
                r.token_serial
            );
        }
        Ok(t)
    }

    /// Makes an Ed25519 key pair inside the token (private half sensitive, not extractable)
    /// and returns its record and public key. The label is provisional: see [`Token::relabel`].
    pub fn generate(&self, module: &Path, label: Option<&str>) -> anyhow::Result<Generated> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| anyhow!("the OS random generator: {e}"))?;
        let key_label = format!("tally-pending-{}", hex::encode(id));
        let mut last = None;
        for params in [&ED25519_OID_DER[..], ED25519_NAME_DER] {
            let public_t = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(params.to_vec()),
                Attribute::Id(id.to_vec()),
                Attribute::Label(key_label.clone().into_bytes()),
            ];
            let private_t = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Id(id.to_vec()),
                Attribute::Label(key_label.clone().into_bytes()),
            ];
            match self.session.generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_t,
                &private_t,
            ) {
                Ok((public, private)) => {
                    return match self.public_key(public) {
                        Ok(key) => Ok(Generated {
                            r: Pkcs11Ref {
                                module: module.to_path_buf(),
                                slot: label.is_none().then_some(self.slot.id()),
                                token_label: label.map(str::to_string),
                                token_serial: self.serial.clone(),
                                key_id: hex::encode(id),
                                key_label,
                            },
                            key,
                            public,
                            private,
                        }),
                        Err(e) => {
                            let _ = self.session.destroy_object(private);
                            let _ = self.session.destroy_object(public);
                            Err(e)
                        }
                    };
                }
                Err(
                    e @ Error::Pkcs11(
                        RvError::CurveNotSupported
                        | RvError::AttributeValueInvalid
                        | RvError::DomainParamsInvalid
                        | RvError::TemplateInconsistent,
                        _,
                    ),
                ) => last = Some(e),
                Err(e) => return Err(anyhow!("generating an Ed25519 key in the token: {e}")),
            }
        }
        Err(anyhow!(
            "the PKCS#11 token cannot make Ed25519 keys (CKM_EC_EDWARDS_KEY_PAIR_GEN): {}",
            last.map_or_else(String::new, |e| e.to_string())
        ))
    }

    /// The Ed25519 public key of `public` (`CKA_EC_POINT`: a DER OCTET STRING around the 32
    /// bytes, or the 32 bytes bare).
    fn public_key(&self, public: ObjectHandle) -> anyhow::Result<VerifyingKey> {
        let attrs = self
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| anyhow!("reading the public key from the token: {e}"))?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| anyhow!("the token returned no CKA_EC_POINT"))?;
        let raw = match point.as_slice() {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            bare if bare.len() == 32 => bare,
            _ => bail!(
                "the token's CKA_EC_POINT is not an Ed25519 key ({} bytes)",
                point.len()
            ),
        };
        VerifyingKey::from_slice(raw).map_err(|e| anyhow!("the token's public key: {e}"))
    }

    /// Gives the generated pair its final label (`tally-token-SERIAL`, once the node has
    /// issued the token) and returns the record for the token file.
    pub fn relabel(&self, g: &Generated, label: &str) -> anyhow::Result<Pkcs11Ref> {
        for h in [g.public, g.private] {
            self.session
                .update_attributes(h, &[Attribute::Label(label.as_bytes().to_vec())])
                .map_err(|e| anyhow!("labelling the key in the token: {e}"))?;
        }
        Ok(Pkcs11Ref {
            key_label: label.to_string(),
            ..g.r.clone()
        })
    }

    /// Removes a generated pair again (best effort: the token was not issued).
    pub fn destroy(&self, g: &Generated) {
        let _ = self.session.destroy_object(g.private);
        let _ = self.session.destroy_object(g.public);
    }

    /// Signs `domain || msg` with the private key `r` names (pure Ed25519, `CKM_EDDSA`) and
    /// checks the signature against `expected` before returning it.
    pub fn sign(
        &self,
        r: &Pkcs11Ref,
        expected: &VerifyingKey,
        domain: &[u8],
        msg: &[u8],
    ) -> anyhow::Result<Signature> {
        check_domain(domain).map_err(|e| anyhow!("{e}"))?;
        let id = hex::decode(&r.key_id).map_err(|_| anyhow!("pkcs11.key_id: not hex"))?;
        let keys = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Id(id),
            ])
            .map_err(|e| anyhow!("looking up the key in the PKCS#11 token: {e}"))?;
        let [key] = keys.as_slice() else {
            bail!(
                "the PKCS#11 token holds {} Ed25519 private keys with id {} ({}), expected one",
                keys.len(),
                r.key_id,
                r.key_label
            );
        };
        let signed = [domain, msg].concat();
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let bytes = self
            .session
            .sign(&mechanism, *key, &signed)
            .map_err(|e| anyhow!("the PKCS#11 token could not sign: {e}"))?;
        let sig = Signature::from_slice(&bytes)
            .map_err(|e| anyhow!("the PKCS#11 token's signature: {e}"))?;
        expected.verify(domain, msg, &sig).map_err(|_| {
            anyhow!(
                "the PKCS#11 token's signature does not verify under the certified key: key \
                 {} is not the token file's key",
                r.key_label
            )
        })?;
        Ok(sig)
    }
}

/// A key pair just made in the token.
pub struct Generated {
    /// Where it is (label still provisional).
    pub r: Pkcs11Ref,
    /// Its public key.
    pub key: VerifyingKey,
    public: ObjectHandle,
    private: ObjectHandle,
}
