//! What frames carry (`docs/protocols/pads.md`, Plaintexts): a holder's request up, the node's
//! reply down.
//!
//! ```text
//! up   = kind:u8 ‖ fields ‖ 0x00 padding
//! down = in_reply_to:u64 (the request's offset) ‖ debit_minor:i64 (what the request cost)
//!        ‖ kind:u8 (echoed) ‖ fields ‖ 0x00 padding
//! ```
//!
//! Padding fills a plaintext to its size class, 256 · 2^i bytes up to 65 536: the node always
//! pads, the holder by default. A non-zero byte after the fields is malformed. Strings are
//! ASCII, lengths big-endian, a body at most 32 KiB. Every request bounds its reply
//! ([`Request::reply_len`]), so the node checks that the reply fits before it acts.

use tally_kernel::Currency;
use zeroize::Zeroizing;

use super::ids::{AccountId, MailboxAddress, MessageId, RequestId};
use super::record::{LINE_LEN, Line};

/// The smallest size class.
pub const CLASS_MIN: usize = 256;
/// The largest plaintext (a frame's largest ciphertext).
pub const PLAIN_MAX: usize = 65_536;
/// The largest body of a `forward`, a `post` or a delivered message.
pub const BODY_MAX: usize = 32 * 1024;
/// Bytes before the fields of a reply.
const REPLY_HEAD: usize = 17;
/// The most lines one `records` request may ask for (its reply fits 65 536 bytes).
pub const RECORDS_MAX: u16 = ((PLAIN_MAX - REPLY_HEAD - 2) / LINE_LEN) as u16;

/// Why a plaintext does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed plaintext: {0}")]
pub struct PlainError(pub &'static str);

/// The size class of `len` bytes: the smallest 256 · 2^i at least as large.
pub fn class_of(len: usize) -> usize {
    len.max(CLASS_MIN).next_power_of_two()
}

/// A provider's name: 1 to 64 of `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ProviderName(String);

impl<'de> serde::Deserialize<'de> for ProviderName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ProviderName, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ProviderName::new(&text).map_err(serde::de::Error::custom)
    }
}

impl ProviderName {
    /// Checks a name.
    pub fn new(name: &str) -> Result<ProviderName, PlainError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(PlainError("a provider name is 1 to 64 of a-z, 0-9 and -"));
        }
        Ok(ProviderName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PIN: 6 to 12 digits, wiped on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Checks a PIN.
    pub fn new(digits: &str) -> Result<Pin, PlainError> {
        if !(6..=12).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PlainError("a PIN is 6 to 12 digits"));
        }
        Ok(Pin(Zeroizing::new(digits.to_string())))
    }

    /// The digits.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(…)")
    }
}

/// A holder's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The pad's state, value, cursors and records head (free).
    Show,
    /// A request to a provider, answered into the pad's mailbox.
    Forward {
        /// To whom.
        provider: ProviderName,
        /// Held in escrow until the provider performed.
        escrow: bool,
        /// What to send.
        body: Vec<u8>,
    },
    /// A message into another pad's mailbox.
    Post {
        /// The mailbox.
        to: MailboxAddress,
        /// Whether the recipient sees this pad's mailbox address.
        show_from: bool,
        /// The message.
        body: Vec<u8>,
    },
    /// Messages from this pad's mailbox, up to a reply of `max_len` bytes.
    Collect {
        /// The reply's largest plaintext, 256 to 65 536.
        max_len: u32,
    },
    /// Pay an escrowed forward now.
    Release {
        /// The forward.
        request: RequestId,
    },
    /// Dispute an escrowed forward.
    Dispute {
        /// The forward.
        request: RequestId,
    },
    /// Join a PIN account.
    Join {
        /// The account.
        account: AccountId,
        /// Its PIN.
        pin: Pin,
    },
    /// Lines of the node's records (free).
    Records {
        /// The first line's number, from 0.
        from: u64,
        /// How many, 1 to [`RECORDS_MAX`].
        max: u16,
    },
    /// Nothing: spends an offset a wallet reserved and never sent (free).
    Noop,
}

/// A request's kind byte, echoed in its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `0x01`.
    Show,
    /// `0x02`.
    Forward,
    /// `0x03`.
    Post,
    /// `0x04`.
    Collect,
    /// `0x05`.
    Release,
    /// `0x06`.
    Dispute,
    /// `0x07`.
    Join,
    /// `0x08`.
    Records,
    /// `0x09`.
    Noop,
}

impl Kind {
    /// The byte.
    pub fn byte(self) -> u8 {
        match self {
            Kind::Show => 0x01,
            Kind::Forward => 0x02,
            Kind::Post => 0x03,
            Kind::Collect => 0x04,
            Kind::Release => 0x05,
            Kind::Dispute => 0x06,
            Kind::Join => 0x07,
            Kind::Records => 0x08,
            Kind::Noop => 0x09,
        }
    }

    fn from_byte(b: u8) -> Result<Kind, PlainError> {
        Ok(match b {
            0x01 => Kind::Show,
            0x02 => Kind::Forward,
            0x03 => Kind::Post,
            0x04 => Kind::Collect,
            0x05 => Kind::Release,
            0x06 => Kind::Dispute,
            0x07 => Kind::Join,
            0x08 => Kind::Records,
            0x09 => Kind::Noop,
            _ => return Err(PlainError("unknown kind")),
        })
    }

    /// Whether frames of this kind are charged for their bytes (`show`, `records` and `noop`
    /// are free, so a pad out of value can still be looked at).
    pub fn charged(self) -> bool {
        !matches!(self, Kind::Show | Kind::Records | Kind::Noop)
    }
}

impl Request {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Show => Kind::Show,
            Request::Forward { .. } => Kind::Forward,
            Request::Post { .. } => Kind::Post,
            Request::Collect { .. } => Kind::Collect,
            Request::Release { .. } => Kind::Release,
            Request::Dispute { .. } => Kind::Dispute,
            Request::Join { .. } => Kind::Join,
            Request::Records { .. } => Kind::Records,
            Request::Noop => Kind::Noop,
        }
    }

    /// The plaintext, padded to its size class when `pad` (the default of wallets); a body
    /// over 32 KiB is refused.
    pub fn encode(&self, pad: bool) -> Result<Zeroizing<Vec<u8>>, PlainError> {
        let mut out = Zeroizing::new(Vec::with_capacity(CLASS_MIN));
        out.push(self.kind().byte());
        match self {
            Request::Show | Request::Noop => {}
            Request::Forward {
                provider,
                escrow,
                body,
            } => {
                out.push(provider.0.len() as u8);
                out.extend_from_slice(provider.0.as_bytes());
                out.push(u8::from(*escrow));
                put_body(&mut out, body);
            }
            Request::Post {
                to,
                show_from,
                body,
            } => {
                out.extend_from_slice(to.as_bytes());
                out.push(u8::from(*show_from));
                put_body(&mut out, body);
            }
            Request::Collect { max_len } => out.extend_from_slice(&max_len.to_be_bytes()),
            Request::Release { request } | Request::Dispute { request } => {
                out.extend_from_slice(request.as_bytes())
            }
            Request::Join { account, pin } => {
                out.extend_from_slice(account.as_bytes());
                out.push(pin.0.len() as u8);
                out.extend_from_slice(pin.0.as_bytes());
            }
            Request::Records { from, max } => {
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&max.to_be_bytes());
            }
        }
        if let Request::Forward { body, .. } | Request::Post { body, .. } = self
            && body.len() > BODY_MAX
        {
            return Err(PlainError("a body is at most 32 KiB"));
        }
        if pad {
            let class = class_of(out.len());
            out.resize(class, 0);
        }
        Ok(out)
    }

    /// Reads a request; anything but the one encoding (and zero padding) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Request, PlainError> {
        let mut r = Reader(bytes);
        let request = match Kind::from_byte(r.u8()?)? {
            Kind::Show => Request::Show,
            Kind::Noop => Request::Noop,
            Kind::Forward => {
                let len = usize::from(r.u8()?);
                let name = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| PlainError("a provider name is ASCII"))?;
                let provider = ProviderName::new(name)?;
                let escrow = r.flag()?;
                Request::Forward {
                    provider,
                    escrow,
                    body: r.body()?,
                }
            }
            Kind::Post => {
                let to = MailboxAddress(r.array()?);
                let show_from = r.flag()?;
                Request::Post {
                    to,
                    show_from,
                    body: r.body()?,
                }
            }
            Kind::Collect => {
                let max_len = r.u32()?;
                if !(CLASS_MIN as u32..=PLAIN_MAX as u32).contains(&max_len) {
                    return Err(PlainError("collect's max_len is 256 to 65536"));
                }
                Request::Collect { max_len }
            }
            Kind::Release => Request::Release {
                request: RequestId(r.array()?),
            },
            Kind::Dispute => Request::Dispute {
                request: RequestId(r.array()?),
            },
            Kind::Join => {
                let account = AccountId(r.array()?);
                let len = usize::from(r.u8()?);
                let digits =
                    std::str::from_utf8(r.take(len)?).map_err(|_| PlainError("a PIN is digits"))?;
                Request::Join {
                    account,
                    pin: Pin::new(digits)?,
                }
            }
            Kind::Records => {
                let from = r.u64()?;
                let max = r.u16()?;
                if !(1..=RECORDS_MAX).contains(&max) {
                    return Err(PlainError("records' max is 1 to 1007"));
                }
                Request::Records { from, max }
            }
        };
        r.padding()?;
        Ok(request)
    }

    /// The length of the padded plaintext of this request's largest reply: the down bytes it
    /// may take are this plus 32.
    pub fn reply_len(&self) -> usize {
        match self {
            Request::Collect { max_len } => class_of(*max_len as usize),
            Request::Records { max, .. } => class_of(REPLY_HEAD + 2 + usize::from(*max) * LINE_LEN),
            _ => CLASS_MIN,
        }
    }
}

/// The pad's state as a `show` reply names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownState {
    /// Frames are taken.
    Active,
    /// Charged frames are refused; free ones are taken.
    Exhausted,
}

/// A `show` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// Active or exhausted.
    pub state: ShownState,
    /// The available value, minor units.
    pub value_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// The first unused up byte (after this frame).
    pub up_next: u64,
    /// The lowest down byte used (this reply's).
    pub down_low: u64,
    /// Lines in the records (this frame's included).
    pub records: u64,
    /// The records' hash after this frame's line.
    pub record_hash: [u8; 32],
}

/// Where a delivered message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// Not said.
    None,
    /// A provider's reply.
    Provider(ProviderName),
    /// Another pad's mailbox.
    Mailbox(MailboxAddress),
}

/// A message taken from the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its id.
    pub id: MessageId,
    /// Its sender, as far as shown.
    pub from: Sender,
    /// The forward it answers, if any.
    pub in_reply_to: Option<RequestId>,
    /// The message.
    pub body: Vec<u8>,
}

impl Delivered {
    /// Bytes it takes in a `collect` reply.
    pub fn encoded_len(&self) -> usize {
        16 + 1 + 1 + self.sender_text().len() + 16 + 4 + self.body.len()
    }

    fn sender_text(&self) -> String {
        match &self.from {
            Sender::None => String::new(),
            Sender::Provider(p) => p.0.clone(),
            Sender::Mailbox(m) => m.to_string(),
        }
    }
}

/// The node's answer to a request taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// To `show`.
    Show(Shown),
    /// To `forward`: the request's id.
    Forward {
        /// Its id.
        request: RequestId,
    },
    /// To `post`: the message's id.
    Post {
        /// Its id.
        message: MessageId,
    },
    /// To `collect`.
    Collect {
        /// The messages, deleted at the node with this reply.
        messages: Vec<Delivered>,
        /// How many more wait.
        waiting: u32,
    },
    /// To `release`.
    Release,
    /// To `dispute`.
    Dispute,
    /// To `join`.
    Join,
    /// To `records`.
    Records {
        /// The lines asked for (fewer at the end).
        lines: Vec<Line>,
    },
    /// To `noop`.
    Noop,
}

impl ReplyBody {
    /// The kind it answers.
    pub fn kind(&self) -> Kind {
        match self {
            ReplyBody::Show(_) => Kind::Show,
            ReplyBody::Forward { .. } => Kind::Forward,
            ReplyBody::Post { .. } => Kind::Post,
            ReplyBody::Collect { .. } => Kind::Collect,
            ReplyBody::Release => Kind::Release,
            ReplyBody::Dispute => Kind::Dispute,
            ReplyBody::Join => Kind::Join,
            ReplyBody::Records { .. } => Kind::Records,
            ReplyBody::Noop => Kind::Noop,
        }
    }
}

/// A reply: the request's offset, what it cost, and the answer. The cost lets the holder
/// keep the same record line as the node (P8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The offset of the request it answers.
    pub in_reply_to: u64,
    /// Minor units the request debited from the pad's value.
    pub debit_minor: i64,
    /// The answer.
    pub body: ReplyBody,
}

impl Reply {
    /// The plaintext, padded to exactly `len` bytes (the request's [`Request::reply_len`]);
    /// `None` when the fields do not fit.
    pub fn encode(&self, len: usize) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        out.extend_from_slice(&self.in_reply_to.to_be_bytes());
        out.extend_from_slice(&self.debit_minor.to_be_bytes());
        out.push(self.body.kind().byte());
        match &self.body {
            ReplyBody::Show(s) => {
                out.push(match s.state {
                    ShownState::Active => 1,
                    ShownState::Exhausted => 2,
                });
                out.extend_from_slice(&s.value_minor.to_be_bytes());
                out.extend_from_slice(s.currency.code().as_bytes());
                out.extend_from_slice(&s.up_next.to_be_bytes());
                out.extend_from_slice(&s.down_low.to_be_bytes());
                out.extend_from_slice(&s.records.to_be_bytes());
                out.extend_from_slice(&s.record_hash);
            }
            ReplyBody::Forward { request } => out.extend_from_slice(request.as_bytes()),
            ReplyBody::Post { message } => out.extend_from_slice(message.as_bytes()),
            ReplyBody::Collect { messages, waiting } => {
                out.extend_from_slice(&u16::try_from(messages.len()).ok()?.to_be_bytes());
                for m in messages {
                    out.extend_from_slice(m.id.as_bytes());
                    out.push(match m.from {
                        Sender::None => 0,
                        Sender::Provider(_) => 1,
                        Sender::Mailbox(_) => 2,
                    });
                    let from = m.sender_text();
                    out.push(from.len() as u8);
                    out.extend_from_slice(from.as_bytes());
                    out.extend_from_slice(&m.in_reply_to.map_or([0; 16], |r| r.0));
                    if m.body.len() > BODY_MAX {
                        return None;
                    }
                    put_body(&mut out, &m.body);
                }
                out.extend_from_slice(&waiting.to_be_bytes());
            }
            ReplyBody::Records { lines } => {
                out.extend_from_slice(&u16::try_from(lines.len()).ok()?.to_be_bytes());
                for line in lines {
                    out.extend_from_slice(&line.to_bytes());
                }
            }
            ReplyBody::Release | ReplyBody::Dispute | ReplyBody::Join | ReplyBody::Noop => {}
        }
        if out.len() > len || len > PLAIN_MAX {
            return None;
        }
        out.resize(len, 0);
        Some(out)
    }

    /// Reads a reply; anything but the one encoding (and zero padding) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Reply, PlainError> {
        let mut r = Reader(bytes);
        let in_reply_to = r.u64()?;
        let debit_minor = r.i64()?;
        let body = match Kind::from_byte(r.u8()?)? {
            Kind::Show => {
                let state = match r.u8()? {
                    1 => ShownState::Active,
                    2 => ShownState::Exhausted,
                    _ => return Err(PlainError("a shown state is 1 or 2")),
                };
                let value_minor = r.i64()?;
                let code = std::str::from_utf8(r.take(3)?)
                    .map_err(|_| PlainError("a currency is ASCII"))?;
                let currency =
                    Currency::from_code(code).map_err(|_| PlainError("unknown currency"))?;
                ReplyBody::Show(Shown {
                    state,
                    value_minor,
                    currency,
                    up_next: r.u64()?,
                    down_low: r.u64()?,
                    records: r.u64()?,
                    record_hash: r.array()?,
                })
            }
            Kind::Forward => ReplyBody::Forward {
                request: RequestId(r.array()?),
            },
            Kind::Post => ReplyBody::Post {
                message: MessageId(r.array()?),
            },
            Kind::Collect => {
                let count = r.u16()?;
                let mut messages = Vec::new();
                for _ in 0..count {
                    let id = MessageId(r.array()?);
                    let kind = r.u8()?;
                    let len = usize::from(r.u8()?);
                    let text = std::str::from_utf8(r.take(len)?)
                        .map_err(|_| PlainError("a sender is ASCII"))?;
                    let from = match (kind, len) {
                        (0, 0) => Sender::None,
                        (1, _) => Sender::Provider(ProviderName::new(text)?),
                        (2, _) => Sender::Mailbox(
                            text.parse().map_err(|_| PlainError("a mailbox address"))?,
                        ),
                        _ => return Err(PlainError("a sender is 0, 1 or 2")),
                    };
                    let reply_to: [u8; 16] = r.array()?;
                    let in_reply_to = (reply_to != [0; 16]).then_some(RequestId(reply_to));
                    messages.push(Delivered {
                        id,
                        from,
                        in_reply_to,
                        body: r.body()?,
                    });
                }
                ReplyBody::Collect {
                    messages,
                    waiting: r.u32()?,
                }
            }
            Kind::Records => {
                let count = r.u16()?;
                let mut lines = Vec::new();
                for _ in 0..count {
                    let line = Line::from_bytes(&r.array()?)
                        .ok_or(PlainError("a record line's outcome"))?;
                    lines.push(line);
                }
                ReplyBody::Records { lines }
            }
            Kind::Release => ReplyBody::Release,
            Kind::Dispute => ReplyBody::Dispute,
            Kind::Join => ReplyBody::Join,
            Kind::Noop => ReplyBody::Noop,
        };
        r.padding()?;
        Ok(Reply {
            in_reply_to,
            debit_minor,
            body,
        })
    }
}

fn put_body(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// A strict reader over a plaintext.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PlainError> {
        if self.0.len() < n {
            return Err(PlainError("shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PlainError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, PlainError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PlainError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, PlainError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, PlainError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, PlainError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, PlainError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PlainError("a flag is 0 or 1")),
        }
    }

    fn body(&mut self) -> Result<Vec<u8>, PlainError> {
        let len = self.u32()? as usize;
        if len > BODY_MAX {
            return Err(PlainError("a body is at most 32 KiB"));
        }
        Ok(self.take(len)?.to_vec())
    }

    fn padding(&self) -> Result<(), PlainError> {
        if self.0.iter().any(|b| *b != 0) {
            return Err(PlainError("a non-zero byte after the fields"));
        }
        Ok(())
    }
}
