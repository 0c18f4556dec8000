//! The token file (`tally-token/v1`): the token state of `tally_proto::receipt::token`, the
//! holder's keys (or where its Ed25519 key is in a PKCS#11 token), its certificate and the
//! node's public receipt keys, as one JSON file of mode 0600. Its format is fixed (see
//! `docs/protocols/receipts.md`): the struct below is serialized as it is, field for field.
//!
//! Loading checks that the file hangs together (the certificate is for the signing key, the
//! server id is the server key's fingerprint) before anything is signed with it; the private
//! keys are wiped from memory when the file is dropped.

use crate::pkcs11::{self, Pkcs11Ref};
use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_client::wire::receipts::ReceiptNodeView;
use tally_kernel::Secret;
use tally_kernel::crypto::bls::{ArbiterPublicKey, BlsPublicKey, BlsSecretKey};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_proto::receipt::token::Token;
use tally_proto::receipt::{Fields, PARTY_DOMAIN, PartySignature, VERSION_BLS};

use super::files::replace_private_file;

/// The token file's format tag.
pub(super) const TOKEN_FORMAT: &str = "tally-token/v1";

/// The token file as stored (JSON). The private keys are wiped when it is dropped.
#[derive(Serialize, Deserialize)]
pub(super) struct TokenFileData {
    /// [`TOKEN_FORMAT`].
    pub(super) format: String,
    /// The holder's name, as receipts name the party.
    pub(super) holder: String,
    /// The holder's role in its certificate.
    pub(super) role: String,
    /// The token state: serial, application key (secret), slots, pending challenges.
    pub(super) token: Token,
    /// The holder's Ed25519 key, PKCS#8 PEM (secret). Exactly one of this and `pkcs11`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) signing_key: Option<String>,
    /// Where the holder's Ed25519 key is when a PKCS#11 token holds it (no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pkcs11: Option<Pkcs11Ref>,
    /// The holder's BLS secret key, hex (secret).
    pub(super) bls_key: String,
    /// The holder's certificate from the node CA, PEM.
    pub(super) certificate: String,
    /// The node's public receipt keys, as the node gave them when the token was issued.
    pub(super) node: ReceiptNodeView,
}

impl Drop for TokenFileData {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.signing_key);
        zeroize::Zeroize::zeroize(&mut self.bls_key);
    }
}

/// The holder's Ed25519 key: in the token file, or in a PKCS#11 token (with the certified
/// public key its signatures must verify under).
pub(super) enum HolderKey {
    /// The key itself, from the file.
    Software(SigningKey),
    /// Where the key is, and the certified public key its signatures must verify under.
    Pkcs11(Pkcs11Ref, VerifyingKey),
}

impl HolderKey {
    /// The holder's public key (the certified one).
    pub(super) fn verifying_key(&self) -> VerifyingKey {
        match self {
            HolderKey::Software(k) => k.verifying_key(),
            HolderKey::Pkcs11(_, k) => *k,
        }
    }
}

/// A loaded, checked token file.
pub(super) struct TokenFile {
    /// Where it was read from (and is saved to).
    pub(super) path: PathBuf,
    /// The file's contents.
    pub(super) data: TokenFileData,
    /// The holder's Ed25519 key.
    pub(super) key: HolderKey,
    /// The holder's BLS key (fair exchange).
    pub(super) bls: BlsSecretKey,
    /// The receipt server's key: writes and receipts from the token's node verify under it.
    pub(super) server_key: VerifyingKey,
    /// The node CA: the trust anchor of the packages this token receives.
    pub(super) ca: Certificate,
}

impl TokenFile {
    /// Reads the token file at `path` and checks that it hangs together.
    pub(super) fn load(path: &Path) -> anyhow::Result<TokenFile> {
        let text = Secret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?,
        );
        let data: TokenFileData = serde_json::from_str(text.expose())
            .with_context(|| format!("{}: not a Tally token file", path.display()))?;
        let bad =
            |what: &str, e: &dyn std::fmt::Display| anyhow!("{}: {what}: {e}", path.display());
        if data.format != TOKEN_FORMAT {
            bail!(
                "{}: token file format {:?}, this tally reads {TOKEN_FORMAT:?}",
                path.display(),
                data.format
            );
        }
        let bls_bytes =
            Secret::new(hex::decode(data.bls_key.trim()).map_err(|e| bad("bls_key", &e))?);
        let bls = BlsSecretKey::from_bytes(bls_bytes.expose()).map_err(|e| bad("bls_key", &e))?;
        let certificate =
            Certificate::from_pem(&data.certificate).map_err(|e| bad("certificate", &e))?;
        let certified = certificate
            .public_key()
            .map_err(|e| bad("certificate", &e))?;
        let key = match (&data.signing_key, &data.pkcs11) {
            (Some(pem), None) => HolderKey::Software(
                SigningKey::from_pkcs8_pem(pem).map_err(|e| bad("signing_key", &e))?,
            ),
            (None, Some(r)) => HolderKey::Pkcs11(r.clone(), certified),
            _ => bail!(
                "{}: a token file holds exactly one of signing_key and pkcs11",
                path.display()
            ),
        };
        if certified != key.verifying_key() {
            bail!(
                "{}: the certificate is not for the token's signing key",
                path.display()
            );
        }
        let server_key = VerifyingKey::from_hex(data.node.server_key.trim())
            .map_err(|e| bad("node.server_key", &e))?;
        if server_key.fingerprint() != data.node.server_id {
            bail!(
                "{}: node.server_id is not the fingerprint of node.server_key",
                path.display()
            );
        }
        let ca = Certificate::from_pem(&data.node.ca_certificate)
            .map_err(|e| bad("node.ca_certificate", &e))?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            data,
            key,
            bls,
            server_key,
            ca,
        })
    }

    /// Writes the token state back (temporary file, then rename).
    pub(super) fn save(&self) -> anyhow::Result<()> {
        let text = Secret::new(serde_json::to_string_pretty(&self.data)? + "\n");
        replace_private_file(&self.path, text.expose().as_bytes())
            .with_context(|| format!("saving the token file {}", self.path.display()))
    }

    /// Field 6/7 value of this token's holder: SHA-256 of its Ed25519 key.
    pub(super) fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.key.verifying_key().to_bytes())
    }

    /// The token's serial, hex (as the node names the token).
    pub(super) fn serial_hex(&self) -> String {
        hex::encode(self.data.token.serial)
    }

    /// The node's BLS key for proxy signatures: A's signature in a fair exchange verifies
    /// under it.
    pub(super) fn proxy_bls_key(&self) -> anyhow::Result<BlsPublicKey> {
        BlsPublicKey::from_hex(self.data.node.proxy_bls_key.trim())
            .map_err(|e| anyhow!("the token file's node.proxy_bls_key: {e}"))
    }

    /// The arbiter's key: B's verifiable escrow is encrypted to it.
    pub(super) fn arbiter_key(&self) -> anyhow::Result<ArbiterPublicKey> {
        ArbiterPublicKey::from_hex(self.data.node.arbiter_key.trim())
            .map_err(|e| anyhow!("the token file's node.arbiter_key: {e}"))
    }

    /// Signs fields 1–7 with the key the receipt's version uses. A key in a PKCS#11 token
    /// signs there (PIN from `pin_file`, else `TALLY_PKCS11_PIN`), checked before it is used.
    pub(super) fn sign(
        &self,
        fields: &Fields,
        pin_file: Option<&Path>,
    ) -> anyhow::Result<PartySignature> {
        let msg = fields.party_part();
        if fields.version == VERSION_BLS {
            return Ok(PartySignature::Bls(self.bls.sign(PARTY_DOMAIN, &msg)));
        }
        Ok(PartySignature::Ed25519(match &self.key {
            HolderKey::Software(k) => k.sign(PARTY_DOMAIN, &msg),
            HolderKey::Pkcs11(r, public) => {
                let pin = pkcs11::read_pin(pin_file)?;
                pkcs11::Token::open_ref(r, &pin)?.sign(r, public, PARTY_DOMAIN, &msg)?
            }
        }))
    }

    /// Where receipts pushed off the token go by default: `TOKEN_FILE.receipts/`.
    pub(super) fn default_export_dir(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".receipts");
        PathBuf::from(name)
    }
}
