//! `tally pad …`: anonymous prepaid pads (issue [8], `docs/protocols/pads.md`).
//!
//! The operator sells a pad at the counter (`buy`) and hands the file to the customer; the
//! holder's wallet (`./tally-pads/`, one `<pad>.pad` file and one `<pad>.json` state each,
//! mode 0600) sends frames with no API key: the pad's bytes are the credential.
//!
//! The wallet writes each frame into its state before sending it, and sends nothing else at
//! that offset until the frame is answered: a command that lost its answer sends the same
//! frame again and gets the kept reply (the node takes a frame once). It keeps the same record
//! chain as the node, line by line, so `show --check` compares the two.

use crate::client::{Client, Conn, answered, idempotency_key, money};
use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_client::wire::pads::{PadSaleRequest, PadTariff};
use tally_proto::pad::file::PadFile;
use tally_proto::pad::frame;
use tally_proto::pad::holder::Holder;
use tally_proto::pad::machine::Refusal;
use tally_proto::pad::plain::{Reply, ReplyBody, Request, Sender, ShownState};

#[derive(Subcommand)]
pub enum PadCommand {
    /// Sell a pad at the operator's counter (the operator): its value is paid from `--from`
    /// into the pad, and the pad file is written to the wallet directory for the customer.
    Buy(BuyArgs),
    /// Make a blank pad for a retailer's shelf (the operator): its file goes to `--out` (the
    /// media), named by the serial printed on it; it takes no frames until activated.
    Stock(StockArgs),
    /// Activate blank stock at the till (the retailer): its value is paid from your account.
    Activate(ActivateArgs),
    /// Cancel stock reported stolen (the retailer or the operator): it never activates; the
    /// replacement blank's file goes to `--out`.
    CancelStock(CancelStockArgs),
    /// Put a pad file (from retail media) into the wallet (the holder).
    Import(ImportArgs),
    /// Join a PIN account with your pad (the holder): the PIN travels under the pad; a lost
    /// pad of the account can then be cancelled and its value restored.
    Join(JoinArgs),
    /// Anonymous PIN accounts of pads: open one, show its value, cancel a lost pad into it
    /// (with the PIN, or by a recovery subscriber's code), buy a pad from it, move a pad to
    /// another account, restrict the providers a pad may pay.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Move a pad of your PIN account to another account, with the node's signed receipt
    /// (the same as `tally pad account transfer`).
    Transfer(AccountTransferArgs),
    /// Cancel a lost pad of your PIN account with the PIN: its value moves into the account
    /// (the same as `tally pad account cancel`; without the PIN: `account cancel-by-code`).
    Cancel(AccountCancelArgs),
    /// Redeem a voucher card's code for a new pad (anyone holding the code; no API key): the
    /// pad file goes to the wallet; the same code again gives the same pad.
    Redeem(RedeemArgs),
    /// Ask the node for the pad's state, value and records (free of charge) and print them
    /// beside the wallet's; `--check` compares the record chains line by line.
    Show(ShowArgs),
    /// Post a message to another pad's mailbox (the holder): enciphered with your pad's bytes,
    /// released by the node's relay together with the others of its window; debited for its
    /// pad bytes and the tariff's post price.
    Post(PostArgs),
    /// Collect the messages the relay released to your pad's mailbox (the holder): each is
    /// handed over once and deleted at the node. Providers' replies say which request they
    /// answer.
    Collect(CollectArgs),
    /// Send a request to a service provider (the holder): the node forwards it through the
    /// relay (the provider sees a request id, never your pad) and its reply comes into your
    /// mailbox; debited for its pad bytes and the provider's price (held in escrow with
    /// `--escrow` or when the provider asks for it).
    Send(SendArgs),
    /// Pay an escrowed request now (the holder), before its deadline.
    Release(EscrowArgs),
    /// Dispute an escrowed request (the holder): the operator decides whether the provider is
    /// paid.
    Dispute(EscrowArgs),
    /// A pad's state and books as the node keeps them (the operator); never its bytes.
    Inspect(InspectArgs),
    /// Make a long-term key pair (a seller's): messages posted to its public key reach the
    /// pad you point it at with `tally pad alias`, while your pads come and go.
    Keygen(crate::pad_keys::KeygenArgs),
    /// Point a long-term key at your pad's mailbox (a signed claim; a later one moves it).
    Alias(crate::pad_keys::AliasArgs),
    /// Set what pads pay in a currency (the operator).
    Tariff(TariffArgs),
}

#[derive(Args)]
pub struct BuyArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account paying the pad's value (the operator's till).
    #[arg(long)]
    pub from: String,
    #[command(flatten)]
    pub pad: NewPadArgs,
    /// The node URL written into the pad file (default: --server).
    #[arg(long)]
    pub node_url: Option<String>,
    /// A provider the pad may pay (repeat for several); none: any.
    #[arg(long = "allow", value_name = "PROVIDER")]
    pub allow: Vec<String>,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The pad (`pad-…`); default: the only pad in the wallet.
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// Fetch the node's record lines and compare them with the wallet's.
    #[arg(long)]
    pub check: bool,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct RedeemArgs {
    /// The code under the scratch layer (case, spaces and dashes do not matter).
    pub code: String,
    /// Node URL.
    #[arg(long, env = "TALLY_SERVER", default_value = concat!("http://", "127.0.0.1:8640"))]
    pub server: String,
    /// Pad bytes.
    #[arg(long, default_value_t = 65_536)]
    pub size: u64,
    /// `one_time` or `session_key`.
    #[arg(long, default_value = "one_time")]
    pub mode: String,
    /// Where the pad file goes.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct StockArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The retailer that sells it (its API key's owner).
    #[arg(long)]
    pub retailer: String,
    /// The currency it will be activated in.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Pad bytes.
    #[arg(long, default_value_t = 65_536)]
    pub size: u64,
    /// `one_time` or `session_key`.
    #[arg(long, default_value = "one_time")]
    pub mode: String,
    /// The node URL written into the pad file (default: --server).
    #[arg(long)]
    pub node_url: Option<String>,
    /// Where the file goes (the media), as `<serial>.pad`.
    #[arg(long, default_value = "./tally-stock")]
    pub out: PathBuf,
    /// Idempotency key (generated and printed when absent).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The serial printed on the media (`ps-…`).
    pub serial: String,
    /// Your account that pays the value.
    #[arg(long)]
    pub from: String,
    /// The value, e.g. "5.00 EUR".
    #[arg(long)]
    pub value: String,
}

#[derive(Args)]
pub struct CancelStockArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The serial of the stolen media (`ps-…`).
    pub serial: String,
    /// The node URL written into the replacement's file (default: --server).
    #[arg(long)]
    pub node_url: Option<String>,
    /// Where the replacement's file goes.
    #[arg(long, default_value = "./tally-stock")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct JoinArgs {
    /// The account (`pa-…`).
    pub account: String,
    /// Its PIN (6 to 12 digits).
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
    /// Your pad (`pad-…`); default: the only pad in the wallet.
    #[arg(long)]
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Open an account controlled by a PIN (no API key, no name): keep its id with the PIN.
    Open(AccountOpenArgs),
    /// The account's value, per currency.
    Show(AccountArgs),
    /// Cancel a lost pad of the account: it takes no more frames, and its value moves into
    /// the account.
    Cancel(AccountCancelArgs),
    /// Buy a pad from the account's value; its file goes to the wallet.
    Buy(AccountBuyArgs),
    /// Move a pad of the account to another account; the node's signed receipt goes to
    /// `--receipt` (it verifies offline against the node's key).
    Transfer(AccountTransferArgs),
    /// Set the providers a pad of the account may pay (`--provider`, repeated); none: any.
    Allow(AccountAllowArgs),
    /// Name an out-of-band subscriber (`tally subscriber`) who may cancel the account's lost
    /// pads by a code on their second channel, without the PIN: the PIN, then their code.
    Recovery(AccountRecoveryArgs),
    /// Cancel a lost pad of the account by the recovery subscriber's code, without the PIN:
    /// its value moves into the account.
    CancelByCode(AccountCancelByCodeArgs),
}

#[derive(Args)]
pub struct AccountOpenArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The PIN (6 to 12 digits).
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
}

#[derive(Args)]
pub struct AccountArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// Its PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
}

#[derive(Args)]
pub struct AccountCancelArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// The lost pad (`pad-…`).
    pub pad: String,
    /// Its PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
}

#[derive(Args)]
pub struct AccountBuyArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// Its PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
    #[command(flatten)]
    pub pad: NewPadArgs,
}

/// A pad paid from an account (the till's, a PIN account's, a provider's): its value, size
/// and mode, and where its file goes.
#[derive(Args)]
pub struct NewPadArgs {
    /// The value, e.g. "10.00 EUR".
    #[arg(long)]
    pub value: String,
    /// Pad bytes (4096 to the node's maximum).
    #[arg(long, default_value_t = 65_536)]
    pub size: u64,
    /// `one_time` (true random bytes) or `session_key` (a keystream of a 32-byte seed:
    /// computationally secure only).
    #[arg(long, default_value = "one_time")]
    pub mode: String,
    /// Where the pad file goes.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// Idempotency key (generated and printed when absent): re-run with it after a lost
    /// answer to get the same pad.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

impl NewPadArgs {
    /// The value, and the idempotency key to send (generated and printed when absent).
    pub(crate) fn value_and_key(&self) -> anyhow::Result<(tally_kernel::Amount, String)> {
        Ok((
            crate::accounts::parse_amount(&self.value)?,
            idempotency_key(&self.idempotency_key),
        ))
    }
}

#[derive(Args)]
pub struct AccountTransferArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The giving account (`pa-…`).
    pub account: String,
    /// The pad (`pad-…`).
    pub pad: String,
    /// The account it goes to (`pa-…`).
    #[arg(long)]
    pub to: String,
    /// The giving account's PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
    /// Where the receipt goes.
    #[arg(long, default_value = "pad-transfer.receipt.json")]
    pub receipt: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The pad file.
    pub file: PathBuf,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
}

#[derive(Args)]
pub struct PostArgs {
    /// Your pad (`pad-…`); default: the only pad in the wallet.
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// The recipient: its mailbox address (`mbx-…`) or a public key (`pk-…`), as its `tally
    /// pad show` prints them, or a seller's long-term key.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub body: BodyArgs,
    /// Let the recipient see your mailbox address (to answer you); anonymous otherwise.
    #[arg(long)]
    pub show_from: bool,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct AccountAllowArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// The pad (`pad-…`).
    pub pad: String,
    /// A provider the pad may pay (repeat for several); none: any.
    #[arg(long = "provider", value_name = "NAME")]
    pub providers: Vec<String>,
    /// Its PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
}

/// A message's body: `--text` or `--file`, at most 32 KiB.
#[derive(Args)]
pub struct BodyArgs {
    /// The message, as text.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub text: Option<String>,
    /// The message, from a file (at most 32 KiB).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

impl BodyArgs {
    /// The bytes, at most 32 KiB.
    pub(crate) fn read(&self) -> anyhow::Result<Vec<u8>> {
        let body = match (&self.text, &self.file) {
            (Some(t), _) => t.as_bytes().to_vec(),
            (None, Some(f)) => {
                std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
            }
            (None, None) => bail!("--text or --file"),
        };
        if body.len() > tally_proto::pad::plain::BODY_MAX {
            bail!(
                "a message is at most 32 KiB; this one is {} bytes",
                body.len()
            );
        }
        Ok(body)
    }
}

#[derive(Args)]
pub struct AccountRecoveryArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// The subscriber (a Tally out-of-band user with a verified second channel).
    #[arg(long)]
    pub user: String,
    /// Its PIN.
    #[arg(long, env = "TALLY_PAD_PIN", hide_env_values = true)]
    pub pin: String,
}

#[derive(Args)]
pub struct AccountCancelByCodeArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The account (`pa-…`).
    pub account: String,
    /// The lost pad (`pad-…`).
    pub pad: String,
}

#[derive(Args)]
pub struct SendArgs {
    /// Your pad (`pad-…`); default: the only pad in the wallet.
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// The provider (as `tally provider show` names it).
    #[arg(long)]
    pub provider: String,
    #[command(flatten)]
    pub body: BodyArgs,
    /// Hold the price in escrow until the provider performed (you may release or dispute it
    /// before its deadline).
    #[arg(long)]
    pub escrow: bool,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct EscrowArgs {
    /// The request (`req-…`, as `tally pad send` printed it).
    pub request: String,
    /// Your pad (`pad-…`); default: the only pad in the wallet.
    #[arg(long)]
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct CollectArgs {
    /// Your pad (`pad-…`); default: the only pad in the wallet.
    pub pad: Option<String>,
    /// The wallet directory.
    #[arg(long, default_value = "./tally-pads")]
    pub wallet: PathBuf,
    /// Write each message to DIR/<message>.bin instead of printing it.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The largest reply, bytes (256 to 65536; rounded down to a size class): it bounds what
    /// one collect hands over and what it costs; `waiting` says what is left.
    #[arg(long, default_value_t = 4096)]
    pub max_len: u32,
    /// CA certificate to trust for an https:// node (its DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The pad (`pad-…`).
    pub pad: String,
}

#[derive(Args)]
pub struct TariffArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// ISO-4217 code.
    pub currency: String,
    /// Minor units per KiB of charged pad bytes (show, records and noop are free).
    #[arg(long, default_value_t = 0)]
    pub byte_price: i64,
    /// Minor units per post to a mailbox.
    #[arg(long, default_value_t = 0)]
    pub post_price: i64,
    /// The operator's share of providers' prices, basis points.
    #[arg(long, default_value_t = 0)]
    pub commission_bps: u32,
}

pub async fn pad(c: PadCommand) -> anyhow::Result<ExitCode> {
    match c {
        PadCommand::Buy(a) => buy(a).await,
        PadCommand::Stock(a) => stock(a).await,
        PadCommand::Activate(a) => activate(a).await,
        PadCommand::CancelStock(a) => cancel_stock(a).await,
        PadCommand::Import(a) => import(a),
        PadCommand::Join(a) => join(a).await,
        PadCommand::Account(c) => account(c).await,
        PadCommand::Transfer(a) => account(AccountCommand::Transfer(a)).await,
        PadCommand::Cancel(a) => account(AccountCommand::Cancel(a)).await,
        PadCommand::Redeem(a) => redeem(a).await,
        PadCommand::Show(a) => show(a).await,
        PadCommand::Post(a) => post(a).await,
        PadCommand::Collect(a) => collect(a).await,
        PadCommand::Send(a) => send(a).await,
        PadCommand::Release(a) => escrow(a, true).await,
        PadCommand::Dispute(a) => escrow(a, false).await,
        PadCommand::Inspect(a) => inspect(a).await,
        PadCommand::Keygen(a) => crate::pad_keys::keygen(a),
        PadCommand::Alias(a) => {
            let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
            let path = Wallet::file_path(&a.wallet, &pad)?;
            crate::pad_keys::alias(a, &pad, &path).await
        }
        PadCommand::Tariff(a) => tariff(a).await,
    }
}

async fn buy(a: BuyArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let (value, key) = a.pad.value_and_key()?;
    let from = crate::client::parse_id("--from", &a.from)?;
    let req = PadSaleRequest {
        from: tally_kernel::Id(from),
        value_minor: value.minor,
        currency: value.currency.code().into(),
        size: a.pad.size,
        mode: Some(a.pad.mode.clone()),
        node_url: a
            .node_url
            .clone()
            .unwrap_or_else(|| client.base().to_string()),
        allow: a.allow.clone(),
    };
    let sold = answered(client.api.pad_sell(&req, &key).await?);
    if client.json {
        keep(&sold, &a.pad.wallet, false)?;
        client.show(&sold, |_| String::new());
    } else {
        keep(&sold, &a.pad.wallet, true)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps a pad the node made (sold, or redeemed from a voucher) in the wallet: its file (mode
/// 0600, never overwritten) and a fresh state; prints what it is when `print`.
pub(crate) fn keep(
    sold: &tally_client::wire::pads::PadSold,
    wallet: &Path,
    print: bool,
) -> anyhow::Result<()> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&sold.file)
        .context("the node's pad file is not base64")?;
    let file = PadFile::decode(&bytes).context("the node's pad file does not decode")?;
    let path = Wallet::file_path(wallet, &sold.pad)?;
    if path.exists() {
        eprintln!("note: {} exists already; kept as it is", path.display());
    } else {
        std::fs::create_dir_all(wallet)
            .with_context(|| format!("creating {}", wallet.display()))?;
        tally_service::identity::write_private_file(&path, &bytes)?;
        Wallet::new(&file).save(wallet, &sold.pad)?;
    }
    if print {
        println!("pad       {}", sold.pad);
        println!("mailbox   {}", sold.mailbox);
        println!("mode      {}", sold.mode);
        println!("size      {} bytes", sold.size);
        println!("value     {}", money(sold.value_minor, &sold.currency));
        println!("file      {}", path.display());
    }
    Ok(())
}

/// Writes a stocked pad's file to `out` as `<serial>.pad` (the media) and prints it.
fn media(stocked: &tally_client::wire::pads::PadStocked, out: &Path) -> anyhow::Result<()> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&stocked.pad.file)
        .context("the node's pad file is not base64")?;
    PadFile::decode(&bytes).context("the node's pad file does not decode")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{}.pad", stocked.serial));
    if path.exists() {
        eprintln!("note: {} exists already; kept as it is", path.display());
    } else {
        tally_service::identity::write_private_file(&path, &bytes)?;
    }
    println!("serial    {}", stocked.serial);
    println!("size      {} bytes", stocked.pad.size);
    println!("state     blank (activate it at the till)");
    println!("file      {}", path.display());
    Ok(())
}

async fn stock(a: StockArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let key = idempotency_key(&a.idempotency_key);
    let req = tally_client::wire::pads::PadStockRequest {
        retailer: a.retailer.clone(),
        currency: a.currency.clone(),
        size: a.size,
        mode: Some(a.mode.clone()),
        node_url: a
            .node_url
            .clone()
            .unwrap_or_else(|| client.base().to_string()),
    };
    let stocked = answered(client.api.pad_stock(&req, &key).await?);
    media(&stocked, &a.out)?;
    Ok(ExitCode::SUCCESS)
}

async fn activate(a: ActivateArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let value = crate::accounts::parse_amount(&a.value)?;
    let from = crate::client::parse_id("--from", &a.from)?;
    let req = tally_client::wire::pads::PadActivateRequest {
        from: tally_kernel::Id(from),
        value_minor: value.minor,
    };
    let v = answered(client.api.pad_activate(&a.serial, &req).await?);
    client.show(&v, |v| {
        format!(
            "serial    {}\nstate     {}\nvalue     {}",
            v.serial,
            v.state,
            money(v.value_minor, &v.currency)
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn cancel_stock(a: CancelStockArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let req = tally_client::wire::pads::PadStockCancelRequest {
        node_url: a
            .node_url
            .clone()
            .unwrap_or_else(|| client.base().to_string()),
    };
    let replacement = client.api.pad_stock_cancel(&a.serial, &req).await?;
    println!("cancelled {}", a.serial);
    media(&replacement, &a.out)?;
    Ok(ExitCode::SUCCESS)
}

async fn join(a: JoinArgs) -> anyhow::Result<ExitCode> {
    let account: tally_proto::pad::ids::AccountId = a
        .account
        .parse()
        .with_context(|| format!("{:?} is not an account id", a.account))?;
    let pin =
        tally_proto::pad::plain::Pin::new(&a.pin).map_err(|e| anyhow::anyhow!("--pin: {e}"))?;
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    holder.send(&Request::Join { account, pin }).await?;
    println!("pad       {pad}");
    println!("account   {account}");
    Ok(ExitCode::SUCCESS)
}

fn account_summary(v: &tally_client::wire::pads::PadAccountView) -> String {
    let mut out = format!("account   {}", v.account);
    for value in &v.values {
        out.push_str(&format!(
            "\nvalue     {}",
            money(value.available_minor, &value.currency)
        ));
    }
    out
}

async fn account(c: AccountCommand) -> anyhow::Result<ExitCode> {
    use tally_client::wire::pads::{PadAccountBuyRequest, PadAccountOpenRequest, PadAccountPin};
    match c {
        AccountCommand::Open(a) => {
            let client = Client::new(&a.conn)?;
            let v = client
                .api
                .pad_account_open(&PadAccountOpenRequest { pin: a.pin.clone() })
                .await?;
            client.show(&v, account_summary);
        }
        AccountCommand::Show(a) => {
            let client = Client::new(&a.conn)?;
            let v = client
                .api
                .pad_account(&a.account, &PadAccountPin { pin: a.pin.clone() })
                .await?;
            client.show(&v, account_summary);
        }
        AccountCommand::Cancel(a) => {
            let client = Client::new(&a.conn)?;
            let v = client
                .api
                .pad_account_cancel(&a.account, &a.pad, &PadAccountPin { pin: a.pin.clone() })
                .await?;
            println!("cancelled {}", a.pad);
            client.show(&v, account_summary);
        }
        AccountCommand::Transfer(a) => {
            let client = Client::new(&a.conn)?;
            let req = tally_client::wire::pads::PadTransferRequest {
                pin: a.pin.clone(),
                to: a.to.clone(),
            };
            let t = client
                .api
                .pad_account_transfer(&a.account, &a.pad, &req)
                .await?;
            std::fs::write(&a.receipt, &t.receipt)
                .with_context(|| format!("writing {}", a.receipt.display()))?;
            println!("pad       {}", t.pad);
            println!("from      {}", t.from);
            println!("to        {}", t.to);
            println!("receipt   {}", a.receipt.display());
        }
        AccountCommand::Recovery(a) => {
            let client = Client::new(&a.conn)?;
            let req = tally_client::wire::pads::PadRecoveryRequest {
                pin: a.pin.clone(),
                user: a.user.clone(),
            };
            let v = crate::oob::confirming(&client, "(the same command)", || {
                client.api.pad_account_recovery(&a.account, &req)
            })
            .await?;
            client.show(&v, |v| {
                format!("account   {}\nrecovery  {}", v.account, v.user)
            });
        }
        AccountCommand::CancelByCode(a) => {
            let client = Client::new(&a.conn)?;
            let v = crate::oob::confirming(&client, "(the same command)", || {
                client.api.pad_account_cancel_by_code(&a.account, &a.pad)
            })
            .await?;
            client.show(&v, account_summary);
        }
        AccountCommand::Allow(a) => {
            let client = Client::new(&a.conn)?;
            let req = tally_client::wire::pads::PadAllowRequest {
                pin: a.pin.clone(),
                providers: a.providers.clone(),
            };
            let v = client
                .api
                .pad_account_allow(&a.account, &a.pad, &req)
                .await?;
            client.show(&v, |v| {
                let allow = match v.allow.is_empty() {
                    true => "any provider".to_string(),
                    false => v.allow.join(", "),
                };
                format!("pad       {}\nallow     {allow}", v.pad)
            });
        }
        AccountCommand::Buy(a) => {
            let client = Client::new(&a.conn)?;
            let (value, key) = a.pad.value_and_key()?;
            let req = PadAccountBuyRequest {
                pin: a.pin.clone(),
                value_minor: value.minor,
                currency: value.currency.code().into(),
                size: a.pad.size,
                mode: Some(a.pad.mode.clone()),
                node_url: client.base().to_string(),
            };
            let sold = answered(client.api.pad_account_buy(&a.account, &req, &key).await?);
            keep(&sold, &a.pad.wallet, true)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let file = PadFile::decode(&bytes).with_context(|| format!("{}", a.file.display()))?;
    let pad = file.pad.to_string();
    let path = Wallet::file_path(&a.wallet, &pad)?;
    if path.exists() {
        bail!("{} is in the wallet already", path.display());
    }
    std::fs::create_dir_all(&a.wallet)
        .with_context(|| format!("creating {}", a.wallet.display()))?;
    tally_service::identity::write_private_file(&path, &bytes)?;
    Wallet::new(&file).save(&a.wallet, &pad)?;
    println!("pad       {pad}");
    println!("file      {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn post(a: PostArgs) -> anyhow::Result<ExitCode> {
    let to = crate::pad_keys::recipient(&a.to)?;
    let body = a.body.read()?;
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    let request = Request::Post {
        to,
        show_from: a.show_from,
        body,
    };
    let reply = holder.send(&request).await?;
    let ReplyBody::Post { message } = reply.body else {
        bail!("the node answered a post with another kind of reply");
    };
    let currency = holder.file.face.currency.code();
    println!("posted    {message} to {to}");
    println!("debited   {}", money(reply.debit_minor, currency));
    Ok(ExitCode::SUCCESS)
}

async fn send(a: SendArgs) -> anyhow::Result<ExitCode> {
    let provider = tally_proto::pad::plain::ProviderName::new(&a.provider)
        .map_err(|e| anyhow::anyhow!("--provider: {}", e.0))?;
    let body = a.body.read()?;
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    let reply = holder
        .send(&Request::Forward {
            provider: provider.clone(),
            escrow: a.escrow,
            body,
        })
        .await?;
    let ReplyBody::Forward { request } = reply.body else {
        bail!("the node answered a forward with another kind of reply");
    };
    println!("sent      {request} to {}", provider.as_str());
    println!(
        "debited   {}",
        money(reply.debit_minor, holder.file.face.currency.code())
    );
    println!("          its reply comes into your mailbox: tally pad collect");
    Ok(ExitCode::SUCCESS)
}

async fn escrow(a: EscrowArgs, release: bool) -> anyhow::Result<ExitCode> {
    let request: tally_proto::pad::ids::RequestId = a
        .request
        .parse()
        .with_context(|| format!("{:?} is not a request id (req-…)", a.request))?;
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    let ask = match release {
        true => Request::Release { request },
        false => Request::Dispute { request },
    };
    let reply = holder.send(&ask).await?;
    let done = if release { "released" } else { "disputed" };
    println!("{done:<9} {request}");
    println!(
        "debited   {}",
        money(reply.debit_minor, holder.file.face.currency.code())
    );
    Ok(ExitCode::SUCCESS)
}

async fn collect(a: CollectArgs) -> anyhow::Result<ExitCode> {
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    // The largest reply the pad still has room for, beside the request's 288 bytes.
    let h = holder.wallet.holder;
    let room = h
        .down_low
        .saturating_sub(h.up_next)
        .saturating_sub(2 * 32 + 256);
    let Some(max_len) = [65_536u32, 32_768, 16_384, 8192, 4096, 2048, 1024, 512, 256]
        .into_iter()
        .find(|c| *c <= a.max_len.max(256) && u64::from(*c) <= room)
    else {
        bail!("the pad's bytes are used up: buy a new pad");
    };
    let reply = holder.send(&Request::Collect { max_len }).await?;
    let ReplyBody::Collect { messages, waiting } = reply.body else {
        bail!("the node answered a collect with another kind of reply");
    };
    for m in &messages {
        let from = match &m.from {
            Sender::None => "anonymous".to_string(),
            Sender::Provider(p) => format!("provider {}", p.as_str()),
            Sender::Mailbox(b) => b.to_string(),
        };
        match &m.in_reply_to {
            Some(r) => println!(
                "message   {} from {from}, in reply to {r}, {} bytes",
                m.id,
                m.body.len()
            ),
            None => println!("message   {} from {from}, {} bytes", m.id, m.body.len()),
        }
        match &a.out {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let path = dir.join(format!("{}.bin", m.id));
                std::fs::write(&path, &m.body)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("          {}", path.display());
            }
            None => println!("          {}", String::from_utf8_lossy(&m.body)),
        }
    }
    println!(
        "collected {} message(s), {waiting} more waiting",
        messages.len()
    );
    println!(
        "debited   {}",
        money(reply.debit_minor, holder.file.face.currency.code())
    );
    Ok(ExitCode::SUCCESS)
}

async fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let v = client.api.pad(&a.pad).await?;
    client.show(&v, |v| {
        format!(
            "pad       {}\nstate     {}\nmode      {}\nsize      {} bytes\nup        {}\ndown      {}\nfree      {} bytes\navailable {}\nsold for  {}\nrecords   {} ({})",
            v.pad,
            v.state,
            v.mode,
            v.size,
            v.up_next,
            v.down_low,
            v.down_low - v.up_next,
            money(v.available_minor, &v.currency),
            money(v.face_minor, &v.currency),
            v.records,
            &v.record_hash[..16]
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn tariff(a: TariffArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let t = PadTariff {
        byte_price_minor_per_kib: a.byte_price,
        post_price_minor: a.post_price,
        commission_bps: a.commission_bps,
    };
    let t = client.api.pad_tariff(&a.currency, &t).await?;
    client.show(&t, |t| {
        format!(
            "{}: {} per KiB of charged pad bytes, {} per post, commission {} bps",
            a.currency,
            money(t.byte_price_minor_per_kib, &a.currency),
            money(t.post_price_minor, &a.currency),
            t.commission_bps
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let pad = Wallet::pick(&a.wallet, a.pad.as_deref())?;
    let mut holder = PadInUse::open(&a.wallet, &pad, a.ca_cert.as_deref())?;
    holder.finish_in_flight().await?;
    let reply = holder.send(&Request::Show).await?;
    let ReplyBody::Show(s) = reply.body else {
        bail!("the node answered a show with another kind of reply");
    };
    let w = &holder.wallet.holder;
    let currency = holder.file.face.currency.code();
    println!("pad       {pad}");
    println!("mailbox   {}", holder.file.bytes.mailbox());
    let key = tally_proto::pad::keys::pad_key(&holder.file.bytes)?.verifying_key();
    println!("key       {}", tally_proto::pad::keys::key_text(&key));
    println!(
        "state     {}",
        match s.state {
            ShownState::Active => "active",
            ShownState::Exhausted => "exhausted",
        }
    );
    println!("value     {}", money(s.value_minor, currency));
    println!("free      {} bytes", s.down_low.saturating_sub(s.up_next));
    println!(
        "cursors   node up {} down {}   wallet up {} down {}",
        s.up_next, s.down_low, w.up_next, w.down_low
    );
    let same = s.records == w.records.count && s.record_hash == w.records.hash;
    println!(
        "records   node {} ({})   wallet {} ({})   {}",
        s.records,
        &hex::encode(s.record_hash)[..16],
        w.records.count,
        &hex::encode(w.records.hash)[..16],
        if same { "agree" } else { "DIFFER" }
    );
    if a.check {
        let first = holder.compare_records().await?;
        match first {
            None => println!("check     every line agrees"),
            Some(n) => {
                println!("check     line {n} differs (or is missing on one side)");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The holder's own state of one pad: the proto crate's holder (cursors and records head),
/// the record lines, and the frame in flight.
#[derive(Serialize, Deserialize)]
pub struct Wallet {
    /// Cursors and the records' head.
    #[serde(flatten)]
    pub holder: Holder,
    /// The record lines (hex), for `show --check`.
    pub lines: Vec<String>,
    /// A frame sent whose answer has not come back (hex): sent again before anything else.
    pub in_flight: Option<String>,
}

impl Wallet {
    fn new(file: &PadFile) -> Wallet {
        Wallet {
            holder: Holder::new(file.pad, file.bytes.size()),
            lines: Vec::new(),
            in_flight: None,
        }
    }

    fn file_path(dir: &Path, pad: &str) -> anyhow::Result<PathBuf> {
        let id: tally_proto::pad::ids::PadId = pad
            .parse()
            .with_context(|| format!("{pad:?} is not a pad id"))?;
        Ok(dir.join(format!("{id}.pad")))
    }

    fn state_path(dir: &Path, pad: &str) -> anyhow::Result<PathBuf> {
        Ok(Wallet::file_path(dir, pad)?.with_extension("json"))
    }

    /// The pad named, or the only one in the wallet.
    fn pick(dir: &Path, pad: Option<&str>) -> anyhow::Result<String> {
        if let Some(p) = pad {
            return Ok(p.to_string());
        }
        let mut pads = Vec::new();
        for e in
            std::fs::read_dir(dir).with_context(|| format!("no wallet at {}", dir.display()))?
        {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(p) = name.strip_suffix(".pad") {
                pads.push(p.to_string());
            }
        }
        match pads.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no pad in {}", dir.display()),
            _ => bail!("{} pads in {}: name one", pads.len(), dir.display()),
        }
    }

    fn save(&self, dir: &Path, pad: &str) -> anyhow::Result<()> {
        crate::wallet::replace_file(
            &Wallet::state_path(dir, pad)?,
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }
}

/// A pad in use: its file, its wallet state, and the node.
struct PadInUse {
    dir: PathBuf,
    pad: String,
    file: PadFile,
    wallet: Wallet,
    api: tally_client::Client,
}

impl PadInUse {
    fn open(dir: &Path, pad: &str, ca: Option<&Path>) -> anyhow::Result<PadInUse> {
        let path = Wallet::file_path(dir, pad)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let file = PadFile::decode(&bytes).with_context(|| format!("{}", path.display()))?;
        let state = Wallet::state_path(dir, pad)?;
        let wallet: Wallet = serde_json::from_str(
            &std::fs::read_to_string(&state)
                .with_context(|| format!("reading {}", state.display()))?,
        )
        .with_context(|| format!("{} is not a pad wallet", state.display()))?;
        let api = crate::client::anonymous_trusting(&file.url, ca)?;
        Ok(PadInUse {
            dir: dir.to_path_buf(),
            pad: pad.to_string(),
            file,
            wallet,
            api,
        })
    }

    /// Sends the frame left in flight by an earlier command, if any.
    async fn finish_in_flight(&mut self) -> anyhow::Result<()> {
        if let Some(hexed) = self.wallet.in_flight.clone() {
            eprintln!("note: sending again the frame an earlier command left unanswered");
            let wire = hex::decode(hexed).context("the wallet's frame in flight")?;
            self.exchange(wire).await?;
        }
        Ok(())
    }

    /// Sends `request` as the next up frame and returns the node's reply.
    async fn send(&mut self, request: &Request) -> anyhow::Result<Reply> {
        let wire = self.wallet.holder.seal(&self.file.bytes, request, true)?;
        // Written before it is sent: a crash after this sends the same frame again.
        self.wallet.in_flight = Some(hex::encode(&wire));
        self.wallet.save(&self.dir, &self.pad)?;
        self.exchange(wire)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the frame was refused"))
    }

    /// Sends a frame and takes its answer into the wallet; `None` when the node burned it.
    async fn exchange(&mut self, wire: Vec<u8>) -> anyhow::Result<Option<Reply>> {
        match self.api.pad_frame(wire.clone()).await {
            Ok(answer) => {
                let (reply, line) =
                    self.wallet
                        .holder
                        .answered(&self.file.bytes, &wire, &answer.value)?;
                self.wallet.lines.push(hex::encode(line.to_bytes()));
                self.wallet.in_flight = None;
                self.wallet.save(&self.dir, &self.pad)?;
                Ok(Some(reply))
            }
            Err(e) => {
                let burned = e
                    .refusal()
                    .and_then(|r| r.details.clone())
                    .and_then(|d| serde_json::from_value::<Refusal>(d).ok());
                if let Some(refusal) = burned {
                    let line = self.wallet.holder.burned(&wire, &refusal)?;
                    self.wallet.lines.push(hex::encode(line.to_bytes()));
                    self.wallet.in_flight = None;
                    self.wallet.save(&self.dir, &self.pad)?;
                    eprintln!("the node refused the request (its pad bytes are spent): {e}");
                    return Ok(None);
                }
                let why = if e.is_transient() {
                    "no answer from the node; the frame is kept and sent again next time"
                } else {
                    "the node refused the frame; nothing changed there"
                };
                Err(e).context(why)
            }
        }
    }

    /// The first record line (by number) where the node's and the wallet's differ, comparing
    /// the lines the wallet had before the check (the check's own requests add lines to both).
    async fn compare_records(&mut self) -> anyhow::Result<Option<u64>> {
        let target = self.wallet.lines.len() as u64;
        let h = |s: &Self| s.wallet.holder;
        let mut n = 0u64;
        while n < target {
            // As many lines as are left, in the largest reply the pad still fits.
            let free = h(self).down_low.saturating_sub(h(self).up_next);
            let room = free.saturating_sub(2 * (256 + frame::KEY_LEN)) + 256;
            let class = [4096u64, 2048, 1024, 512, 256]
                .into_iter()
                .find(|c| *c <= room)
                .unwrap_or(256);
            let fits = (class - 19) / 65;
            let max = u16::try_from(fits.min(target - n)).unwrap_or(1);
            let reply = self.send(&Request::Records { from: n, max }).await?;
            let ReplyBody::Records { lines } = reply.body else {
                bail!("the node answered records with another kind of reply");
            };
            if lines.is_empty() {
                return Ok(Some(n));
            }
            for line in lines {
                let ours = &self.wallet.lines[n as usize];
                if *ours != hex::encode(line.to_bytes()) {
                    return Ok(Some(n));
                }
                n += 1;
            }
        }
        Ok(None)
    }
}

/// `tally pad redeem CODE`: a new pad for a sold card, its file in the wallet.
pub async fn redeem(a: RedeemArgs) -> anyhow::Result<ExitCode> {
    let api = crate::client::anonymous_trusting(&a.server, a.ca_cert.as_deref())?;
    let req = tally_client::wire::pads::VoucherRedeemRequest {
        code: a.code.clone(),
        size: a.size,
        mode: Some(a.mode.clone()),
        node_url: a.server.trim_end_matches('/').to_string(),
    };
    let sold = answered(api.voucher_redeem(&req).await?);
    keep(&sold, &a.wallet, true)?;
    Ok(ExitCode::SUCCESS)
}
