//! `tally pad keygen|alias` and recipients by key (the seed's key pairs; `pad::keys` in proto):
//! a seller keeps one long-term Ed25519 key and points it at the mailbox of its current pad;
//! buyers post to the key (`tally pad post --to pk-…`), which reaches whichever pad the key's
//! latest claim names. Every pad also answers to its own key (`tally pad show` prints it).

use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_kernel::crypto::SigningKey;
use tally_proto::pad::file::PadFile;
use tally_proto::pad::ids::MailboxAddress;
use tally_proto::pad::keys::{AliasClaim, key_address, key_text, parse_key};

#[derive(Args)]
pub struct KeygenArgs {
    /// Where the private key goes (PKCS#8 PEM, mode 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct AliasArgs {
    /// Your pad (`pad-…`) whose mailbox the key points at; default: the only pad in the wallet.
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// The long-term key (`tally pad keygen --out`).
    #[arg(long)]
    pub key: PathBuf,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// A `post`'s recipient: a mailbox address, or the address of a public key.
pub(crate) fn recipient(to: &str) -> anyhow::Result<MailboxAddress> {
    if to.starts_with("pk-") {
        let key = parse_key(to).with_context(|| format!("--to {to:?} is not a public key"))?;
        return Ok(key_address(&key));
    }
    to.parse()
        .with_context(|| format!("--to {to:?} is neither a mailbox address nor a public key"))
}

pub(crate) fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    if a.out.exists() {
        bail!("{} exists: a key is never overwritten", a.out.display());
    }
    let key = SigningKey::generate();
    let pem = key.to_pkcs8_pem()?;
    tally_service::identity::write_private_file(&a.out, pem.expose().as_bytes())?;
    println!("key       {}", key_text(&key.verifying_key()));
    println!("address   {}", key_address(&key.verifying_key()));
    println!("file      {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `tally pad alias`: the key of `a.key` points at the mailbox of `pad`, whose file is at
/// `path` (the wallet's, found by the caller).
pub(crate) async fn alias(a: AliasArgs, pad: &str, path: &Path) -> anyhow::Result<ExitCode> {
    let pem =
        std::fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key = SigningKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("{} is not an Ed25519 private key", a.key.display()))?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = PadFile::decode(&bytes).with_context(|| format!("{}", path.display()))?;
    let claim = AliasClaim {
        mailbox: file.bytes.mailbox(),
        at: tally_kernel::Timestamp::now().as_micros(),
    };
    let req = tally_client::wire::pads::PadAliasRequest {
        mailbox: claim.mailbox.to_string(),
        at: claim.at,
        signature: claim.sign(&key).to_hex(),
    };
    let api = crate::client::anonymous_trusting(&file.url, a.ca_cert.as_deref())?;
    let v = api.pad_alias(&key_text(&key.verifying_key()), &req).await?;
    println!("key       {}", v.key);
    println!("address   {}", v.address);
    println!("mailbox   {} (pad {pad})", v.mailbox);
    Ok(ExitCode::SUCCESS)
}
