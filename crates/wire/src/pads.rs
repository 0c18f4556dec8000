//! Anonymous prepaid pads (issue [8], `docs/protocols/pads.md`): the operator's counter sale,
//! the operator's view of a pad, and the tariff. Frames themselves are bytes
//! (`POST /v1/pad-frames`, `application/octet-stream` both ways), not JSON.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/pads` (operator, `Idempotency-Key`): sells a pad at the counter, paid from
/// `from` (the till's account) into the new pad's value account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadSaleRequest {
    /// The account paying the pad's value (the operator's till or settlement account).
    #[schema(value_type = String)]
    pub from: tally_kernel::Id,
    /// The value, in minor units (> 0), in `from`'s currency.
    pub value_minor: i64,
    /// ISO-4217 code of the value.
    pub currency: String,
    /// Pad bytes, 4096 to the node's maximum (64 MiB by default).
    pub size: u64,
    /// `one_time` (the default: true random bytes) or `session_key` (a ChaCha20 keystream of a
    /// 32-byte seed: computationally secure only).
    #[serde(default)]
    pub mode: Option<String>,
    /// The node URL written into the pad file (where the holder sends frames).
    pub node_url: String,
    /// Providers the pad may pay (`forward` to any other is refused); empty: any.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A pad sold: its file (the customer's half, base64) and what the operator may print.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadSold {
    /// The pad id (`pad-` and 32 hex): never printed on retail media.
    pub pad: String,
    /// Its mailbox address (`mbx-` and 32 hex).
    pub mailbox: String,
    /// `one_time` or `session_key`.
    pub mode: String,
    /// Pad bytes.
    pub size: u64,
    /// The value sold.
    pub value_minor: i64,
    /// Its currency.
    pub currency: String,
    /// The pad file, base64: the pad's bytes. Shown once to whoever bought it; a replay of
    /// the sale (the same key) shows it again.
    pub file: String,
}

debug_hiding!(PadSold { pad, mailbox, mode, size, value_minor, currency } hides { file });

/// `GET /v1/pads/{pad}` (operator): a pad's state and books, never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadView {
    /// The pad id.
    pub pad: String,
    /// `blank`, `active`, `exhausted` or `cancelled`.
    pub state: String,
    /// `one_time` or `session_key`.
    pub mode: String,
    /// Pad bytes.
    pub size: u64,
    /// The first unused up byte.
    pub up_next: u64,
    /// The lowest down byte used.
    pub down_low: u64,
    /// The value available, minor units.
    pub available_minor: i64,
    /// The value sold.
    pub face_minor: i64,
    /// Its currency.
    pub currency: String,
    /// Lines in its records.
    pub records: u64,
    /// The records' hash, hex.
    pub record_hash: String,
    /// The pad's value account.
    #[schema(value_type = String)]
    pub value_account: tally_kernel::Id,
}

/// `PUT /v1/pad-tariff/{currency}` (operator): what pads pay in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadTariff {
    /// Minor units per 1024 pad bytes of charged frames (`show`, `records`, `noop` are free).
    pub byte_price_minor_per_kib: i64,
    /// Minor units per `post`.
    pub post_price_minor: i64,
    /// The operator's share of providers' prices, basis points.
    pub commission_bps: u32,
}

/// `POST /v1/vouchers` (operator, `Idempotency-Key`): blank voucher cards for a retailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherIssueRequest {
    /// The retailer that sells them (the owner of its API key).
    pub retailer: String,
    /// Each card's value, minor units (> 0).
    pub value_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// How many cards, 1 to 100.
    pub count: u32,
}

/// A card issued: its serial (printed) and its code (under the scratch layer). The code is
/// shown to the operator's printer only; the node keeps a keyed hash of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VoucherIssued {
    /// The serial (`vs-` and 16 hex digits).
    pub serial: String,
    /// The code: 25 symbols in five groups and a check symbol.
    pub code: String,
}

debug_hiding!(VoucherIssued { serial } hides { code });

/// `POST /v1/vouchers` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VouchersIssued {
    /// The cards.
    pub vouchers: Vec<VoucherIssued>,
}

/// `POST /v1/vouchers/{serial}/sell` (its retailer): the card sold at the till, paid from
/// the retailer's account into the voucher float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherSellRequest {
    /// The retailer's account that pays the card's value.
    #[schema(value_type = String)]
    pub from: tally_kernel::Id,
}

/// A voucher card, for the operator or its retailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VoucherView {
    /// The serial.
    pub serial: String,
    /// `blank`, `sold`, `redeemed` or `cancelled`.
    pub state: String,
    /// Its value.
    pub value_minor: i64,
    /// Its currency.
    pub currency: String,
    /// The retailer that sells it.
    pub retailer: String,
}

/// `POST /v1/vouchers/redeem` (no API key: the code is the credential): a sold card for a new
/// pad of `size` bytes. The same code again answers the same pad.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherRedeemRequest {
    /// The code as printed (case, spaces and dashes do not matter).
    pub code: String,
    /// Pad bytes, 4096 to the node's maximum.
    pub size: u64,
    /// `one_time` (default) or `session_key`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The node URL written into the pad file.
    pub node_url: String,
}

debug_hiding!(VoucherRedeemRequest { size, mode, node_url } hides { code });

/// `POST /v1/pad-stock` (operator, `Idempotency-Key`): a blank pad for a retailer's shelf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadStockRequest {
    /// The retailer that sells it (its API key's owner).
    pub retailer: String,
    /// ISO-4217 code of the value it will be activated with.
    pub currency: String,
    /// Pad bytes, 4096 to the node's maximum.
    pub size: u64,
    /// `one_time` (default) or `session_key`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The node URL written into the pad file.
    pub node_url: String,
}

/// A blank pad made: the serial printed on its media, and the pad (its file goes on the media).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadStocked {
    /// The serial (`ps-` and 16 hex digits): printed, never the pad id.
    pub serial: String,
    /// The pad and its file.
    pub pad: PadSold,
}

/// `POST /v1/pad-stock/{serial}/activate` (its retailer): sold at the till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadActivateRequest {
    /// The retailer's account that pays the value.
    #[schema(value_type = String)]
    pub from: tally_kernel::Id,
    /// The value, minor units (> 0), in the pad's currency.
    pub value_minor: i64,
}

/// `POST /v1/pad-stock/{serial}/cancel` (its retailer or the operator): stolen stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadStockCancelRequest {
    /// The node URL written into the replacement's file.
    pub node_url: String,
}

/// A pad of retail stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    /// The serial.
    pub serial: String,
    /// `blank`, `active`, `exhausted` or `cancelled`.
    pub state: String,
    /// The value it was activated with (0 while blank).
    pub value_minor: i64,
    /// Its currency.
    pub currency: String,
    /// The retailer.
    pub retailer: String,
    /// The serial of the blank that replaced it, once cancelled.
    pub replaced_by: Option<String>,
}

/// `POST /v1/pad-accounts` (no API key): an anonymous account of pads, controlled by a PIN.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadAccountOpenRequest {
    /// 6 to 12 digits.
    pub pin: String,
}

debug_hiding!(PadAccountOpenRequest {} hides { pin });

/// A request on an account, proved by its PIN (in the body, never in a URL).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadAccountPin {
    /// The account's PIN.
    pub pin: String,
}

debug_hiding!(PadAccountPin {} hides { pin });

/// `POST /v1/pad-accounts/{account}/pads` (`Idempotency-Key`): a new pad paid from the
/// account's value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadAccountBuyRequest {
    /// The account's PIN.
    pub pin: String,
    /// The value, minor units (> 0).
    pub value_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// Pad bytes.
    pub size: u64,
    /// `one_time` (default) or `session_key`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The node URL written into the pad file.
    pub node_url: String,
}

debug_hiding!(PadAccountBuyRequest { value_minor, currency, size, mode, node_url } hides { pin });

/// An account's value in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadAccountValue {
    /// ISO-4217 code.
    pub currency: String,
    /// What may be spent, minor units.
    pub available_minor: i64,
}

/// A PIN account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadAccountView {
    /// Its id (`pa-` and 32 hex digits): keep it with the PIN.
    pub account: String,
    /// Its value, per currency.
    pub values: Vec<PadAccountValue>,
}

/// `POST /v1/pad-accounts/{account}/pads/{pad}/transfer`: the pad moves to another account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadTransferRequest {
    /// The giving account's PIN.
    pub pin: String,
    /// The account it goes to (`pa-…`).
    pub to: String,
}

debug_hiding!(PadTransferRequest { to } hides { pin });

/// A transfer's receipt: a signed record of domain `tally/pad-transfer/v1` under the node key
/// (docs/protocols/pads.md), as JSON text; it verifies offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadTransferred {
    /// The pad.
    pub pad: String,
    /// The account it left.
    pub from: String,
    /// The account it joined.
    pub to: String,
    /// The receipt (a `SignedRecord`, JSON).
    pub receipt: String,
}

/// `PUT /v1/pad-accounts/{account}/pads/{pad}/allow`: sets the providers a pad of the account may pay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadAllowRequest {
    /// The account's PIN.
    pub pin: String,
    /// Provider names; empty: any.
    pub providers: Vec<String>,
}

debug_hiding!(PadAllowRequest { providers } hides { pin });

/// A pad's allow-list, as set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadAllowed {
    /// The pad.
    pub pad: String,
    /// Provider names it may pay; empty: any.
    pub allow: Vec<String>,
}

/// `PUT /v1/pad-providers/{name}`: registers a service provider of pads (or changes its
/// terms), by the owner of the account its prices are paid into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadProviderRequest {
    /// The merchant account credited at settlement; its currency is the price's.
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// Its price per request, minor units (≥ 0).
    pub price_minor: i64,
    /// ISO-4217 code of the price: the account's currency.
    pub currency: String,
    /// Where forwards are posted (a signed webhook, `http://` or `https://`).
    pub webhook: String,
    /// Hold each request's price in escrow until the provider performed.
    #[serde(default)]
    pub escrow: bool,
}

/// A provider, as registered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadProviderView {
    /// Its name.
    pub name: String,
    /// The tenant that answers for it.
    pub owner: String,
    /// The account credited at settlement.
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// ISO-4217 code of its price.
    pub currency: String,
    /// Its price per request, minor units.
    pub price_minor: i64,
    /// Where forwards are posted.
    pub webhook: String,
    /// Whether its requests are held in escrow.
    pub escrow: bool,
    /// Only in the answer to its registration, to its owner: the secret its webhooks are
    /// signed with (`Tally-Signature`, as `verify_webhook_signature` checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

debug_hiding!(PadProviderView { name, owner, account, currency, price_minor, webhook, escrow } hides { webhook_secret });

/// `POST /v1/pad-providers/{name}/replies` (the provider): its answer to a forwarded request,
/// delivered into the asking pad's mailbox through the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadReplyRequest {
    /// The request id the forward carried (`req-` and 32 hex).
    pub request: String,
    /// The answer, base64 (at most 32 KiB decoded).
    pub body: String,
    /// For an escrowed request: the provider performed (the price is paid at the deadline
    /// unless the holder disputes). Ignored otherwise.
    #[serde(default = "yes")]
    pub performed: bool,
    /// For an escrowed request performed: what it cost, minor units, at most the price held
    /// (metering: time or resources used); the rest goes back to the pad. None: the price.
    #[serde(default)]
    pub charge_minor: Option<i64>,
}

fn yes() -> bool {
    true
}

/// A forwarded request, as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadForwardView {
    /// The request id.
    pub request: String,
    /// The provider.
    pub provider: String,
    /// `sent`, `replied`; escrowed: `held`, `performed`, `paid`, `refused`, `disputed`.
    pub state: String,
    /// Whether it is held in escrow.
    pub escrow: bool,
    /// The escrow's deadline (RFC 3339), for an escrowed request.
    pub deadline: Option<String>,
}

/// `POST /v1/pad-settlements` (operator): pays out of each pad clearing account what it owes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadSettlement {
    /// One transfer per currency to the operator's fee account, and per provider.
    pub payouts: Vec<PadPayout>,
}

/// One settlement transfer out of clearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadPayout {
    /// The provider paid, or `None` for the operator's fees.
    pub provider: Option<String>,
    /// The account credited.
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// What it was paid, minor units.
    pub amount_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// The charge lines it paid.
    pub lines: u64,
}

/// `POST /v1/pad-escrows/{request}/verdict` (operator): the verdict on a disputed escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadVerdict {
    /// Pay the provider (true) or give the price back to the pad (false).
    pub pay: bool,
}

/// `POST /v1/pad-providers/{name}/pay` (the provider, `Idempotency-Key`): the seed's reverse
/// flow — the provider pays the holder of the pad that sent `request`, from its account,
/// without learning which pad it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadPayRequest {
    /// The request id a forward carried (`req-…`).
    pub request: String,
    /// Minor units (> 0), in the provider's currency.
    pub amount_minor: i64,
}

/// A payment to a holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadPaid {
    /// The request it answers.
    pub request: String,
    /// Minor units paid.
    pub amount_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// The ledger transfer.
    #[schema(value_type = String)]
    pub transfer: tally_kernel::Id,
}

/// `POST /v1/pad-providers/{name}/payout-pad` (the provider, `Idempotency-Key`): a new pad
/// paid from the provider's account (its earnings paid out in a pad); the file is answered
/// once, to the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadPayoutRequest {
    /// The value, minor units (> 0), in the provider's currency.
    pub value_minor: i64,
    /// Pad bytes.
    pub size: u64,
    /// `one_time` (default) or `session_key`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The node URL written into the pad file.
    pub node_url: String,
}

/// `PUT /v1/pad-accounts/{account}/recovery` (its PIN): names the out-of-band subscriber who
/// may cancel the account's lost pads by a code on their second channel, without the PIN.
/// The subscriber agrees by that code too; some anonymity is traded for recovery.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadRecoveryRequest {
    /// The account's PIN.
    pub pin: String,
    /// The subscriber (an out-of-band user with a verified second-channel address).
    pub user: String,
}

debug_hiding!(PadRecoveryRequest { user } hides { pin });

/// An account's recovery subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadRecovery {
    /// The account.
    pub account: String,
    /// The subscriber who may cancel its lost pads.
    pub user: String,
}

/// `PUT /v1/pad-aliases/{key}` (no API key: the key's signature is the credential): messages
/// posted to the key's address go to `mailbox` from now on — a seller's long-term key kept
/// while its pads come and go. `signature` is the key's over `tally/pad-alias/v1` 0x00 ‖ key ‖
/// mailbox ‖ at (i64 big-endian); a claim older than the one in place is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PadAliasRequest {
    /// The mailbox (`mbx-…`) of a pad.
    pub mailbox: String,
    /// When the claim was made, Unix microseconds (within 10 minutes of the node's clock).
    pub at: i64,
    /// The key's Ed25519 signature, hex.
    pub signature: String,
}

/// Where a key's messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PadAlias {
    /// The key (`pk-…`).
    pub key: String,
    /// Its mailbox address (what a `post` to the key names).
    pub address: String,
    /// The mailbox its messages go to.
    pub mailbox: String,
    /// The claim's time, Unix microseconds.
    pub at: i64,
}
