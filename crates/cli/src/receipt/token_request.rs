//! Tokens whose keys never leave the holder (issue [6] item 13): the holder makes its keys and
//! a certification request signed with them (`tally token request`), the operator has the
//! node certify it (`tally token issue`), and the holder completes its token file
//! (`tally token accept`). `tally token init` stays the one-step way, with the keys made where
//! the operator runs it.
//!
//! The holder's keys wait in a keys file (mode 0600) until `accept` writes the token file; the
//! request and the issue answer carry no private key, though the answer carries the token's
//! application key (mode 0600 too).

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::ExitCode;
use tally_client::wire::receipts::{IssuedToken, NewToken, ReceiptNodeView};
use tally_kernel::Secret;
use tally_kernel::crypto::bls::BlsSecretKey;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::warrant::certificate_bls_key;
use tally_kernel::crypto::{Certificate, SigningKey};
use tally_proto::receipt::token::{SERIAL_LEN, Token};

use super::files::create_private_file;
use super::protocol::hex_array;
use super::token_file::{TOKEN_FORMAT, TokenFileData};
use super::{TokenAcceptArgs, TokenIssueArgs, TokenRequestArgs};
use crate::client::{Client, answered};

/// The keys file's format tag.
const KEYS_FORMAT: &str = "tally-token-keys/v1";

/// The holder's keys until its token is issued (JSON, mode 0600; wiped when dropped).
#[derive(Serialize, Deserialize)]
struct KeysFile {
    format: String,
    holder: String,
    role: String,
    /// Ed25519, PKCS#8 PEM (secret).
    signing_key: String,
    /// BLS, hex (secret).
    bls_key: String,
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.signing_key);
        zeroize::Zeroize::zeroize(&mut self.bls_key);
    }
}

/// What `token issue` hands back to the holder: the issued token and the node's keys.
#[derive(Serialize, Deserialize)]
struct IssueAnswer {
    format: String,
    issued: IssuedToken,
    node: ReceiptNodeView,
}

const ISSUED_FORMAT: &str = "tally-token-issued/v1";

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = Secret::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    serde_json::from_str(text.expose())
        .with_context(|| format!("{} is not a {what}", path.display()))
}

fn write_private_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = Secret::new(serde_json::to_string_pretty(value)? + "\n");
    create_private_file(path, text.expose().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `tally token request`: the holder's keys and its signed certification request.
pub(super) fn request(a: TokenRequestArgs) -> anyhow::Result<ExitCode> {
    for path in [&a.keys, &a.out] {
        if path.exists() {
            bail!("{} exists; it is never replaced", path.display());
        }
    }
    let key = SigningKey::generate();
    let bls = BlsSecretKey::generate();
    let req = NewToken::signed(
        &a.ask.holder,
        a.ask.role.as_str(),
        &key,
        Some(&bls),
        Some(a.ask.slots),
        Some(a.ask.days),
    );
    let keys = KeysFile {
        format: KEYS_FORMAT.into(),
        holder: a.ask.holder.clone(),
        role: a.ask.role.as_str().into(),
        signing_key: key.to_pkcs8_pem()?.expose().clone(),
        bls_key: hex::encode(bls.to_bytes().expose()),
    };
    write_private_json(&a.keys, &keys)?;
    std::fs::write(&a.out, serde_json::to_string_pretty(&req)? + "\n")
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "keys          {} (mode 0600: the private keys; keep it until `tally token accept`)",
        a.keys.display()
    );
    println!(
        "request       {} (no secret: the public keys, signed with them; give it to the operator)",
        a.out.display()
    );
    println!("key           {}", key.verifying_key().fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// `tally token issue`: the operator has the node certify a holder's request.
pub(super) async fn issue(a: TokenIssueArgs) -> anyhow::Result<ExitCode> {
    if a.out.exists() {
        bail!("{} exists; it is never replaced", a.out.display());
    }
    let bytes =
        std::fs::read(&a.request).with_context(|| format!("reading {}", a.request.display()))?;
    let req: NewToken = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a token request", a.request.display()))?;
    let c = Client::new(&a.conn)?;
    let node = c.api.receipt_node().await?;
    // The same request file is the same token: a retry (or a second run) answers the first.
    let idem = format!("token-request-{}", hex::encode(&sha256(&bytes)[..16]));
    let issued = answered(c.api.token_issue(&idem, &req).await?);
    let answer = IssueAnswer {
        format: ISSUED_FORMAT.into(),
        issued,
        node,
    };
    write_private_json(&a.out, &answer)?;
    println!(
        "token         {} for {} ({} slots)",
        answer.issued.serial, answer.issued.holder, answer.issued.slots
    );
    println!(
        "answer        {} (mode 0600: the token's application key; give it to the holder only)",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--arbiter URL`: the arbiter node's own key must be the one the receipt node gives the
/// token (its escrows are encrypted to that key).
pub(super) async fn pin_arbiter(url: &str, node: &ReceiptNodeView) -> anyhow::Result<()> {
    let arbiter = crate::client::anonymous(url)?;
    let key = arbiter
        .arbiter_key()
        .await
        .with_context(|| format!("--arbiter {url}: fetching its key"))?;
    if key.arbiter_key != node.arbiter_key {
        bail!(
            "--arbiter {url} has key {}, but the receipt node names {}: the escrows would not be \
             for the arbiter you chose; nothing was written",
            key.arbiter_key,
            node.arbiter_key
        );
    }
    Ok(())
}

/// `tally token accept`: the holder checks the node's certificate against its own keys and
/// the node's CA and writes its token file.
pub(super) async fn accept(a: TokenAcceptArgs) -> anyhow::Result<ExitCode> {
    if a.file.exists() {
        bail!(
            "{} exists; a token file is never replaced",
            a.file.display()
        );
    }
    let keys: KeysFile = read_json(&a.keys, "keys file (tally token request)")?;
    let answer: IssueAnswer = read_json(&a.issued, "token issue answer (tally token issue)")?;
    if keys.format != KEYS_FORMAT || answer.format != ISSUED_FORMAT {
        bail!("unknown file format; expected {KEYS_FORMAT} and {ISSUED_FORMAT}");
    }
    if let Some(url) = &a.arbiter {
        pin_arbiter(url, &answer.node).await?;
    }
    let issued = &answer.issued;
    if issued.holder != keys.holder {
        bail!(
            "the token was issued to {}, these keys are {}'s",
            issued.holder,
            keys.holder
        );
    }
    let key = SigningKey::from_pkcs8_pem(&keys.signing_key)
        .map_err(|e| anyhow!("{}: signing key: {e}", a.keys.display()))?;
    let bls = BlsSecretKey::from_bytes(
        &hex::decode(&keys.bls_key)
            .map_err(|_| anyhow!("{}: bls key: not hex", a.keys.display()))?,
    )
    .map_err(|e| anyhow!("{}: bls key: {e}", a.keys.display()))?;
    let ca = Certificate::from_pem(&answer.node.ca_certificate)
        .map_err(|e| anyhow!("the node's CA certificate: {e}"))?;
    let certificate =
        Certificate::from_pem(&issued.certificate).map_err(|e| anyhow!("the certificate: {e}"))?;
    if certificate.public_key().ok() != Some(key.verifying_key()) {
        bail!("the certificate is for another key than these keys; nothing was written");
    }
    if certificate_bls_key(&certificate).ok().flatten() != Some(bls.public_key().to_bytes()) {
        bail!("the certificate does not carry this BLS key; nothing was written");
    }
    certificate
        .verify_issued_by(&ca, issued.created_at)
        .map_err(|e| anyhow!("the certificate does not trace to the node's CA: {e}"))?;
    let serial: [u8; SERIAL_LEN] = hex_array("serial", &issued.serial)?;
    let app_key = Secret::new(hex_array::<32>("app_key", &issued.app_key)?);
    let slots = u16::try_from(issued.slots)
        .map_err(|_| anyhow!("the node issued {} slots", issued.slots))?;
    let data = TokenFileData {
        format: TOKEN_FORMAT.into(),
        holder: issued.holder.clone(),
        role: keys.role.clone(),
        token: Token::new(serial, *app_key.expose(), slots),
        signing_key: Some(keys.signing_key.clone()),
        pkcs11: None,
        bls_key: keys.bls_key.clone(),
        certificate: certificate.to_pem(),
        node: answer.node.clone(),
    };
    write_private_json(&a.file, &data)?;
    println!("token         {}", issued.serial);
    println!("holder        {} ({})", issued.holder, keys.role);
    println!(
        "certificate   {} (valid until {})",
        certificate.fingerprint(),
        certificate.not_after().to_rfc3339()
    );
    println!(
        "file          {} (mode 0600: it holds the private keys; {} may be deleted now)",
        a.file.display(),
        a.keys.display()
    );
    Ok(ExitCode::SUCCESS)
}
