//! The demo data set of a dev node (`tally serve --dev`): enough to open a browser on the node
//! and buy something. A merchant `demo-shop` selling one published product, "The Tally field
//! guide" (4.90 EUR), and a customer `ana` with a verified dev-inbox address and 50.00 EUR
//! (not `alice`: the README's walk-throughs make an alice of their own on a dev node).
//!
//! Every step runs under a fixed idempotency key, so seeding again (every start of a dev node)
//! changes nothing; a product the merchant withdrew stays withdrawn. A node without `--dev`
//! refuses to seed: these principals have no API keys and the address was never proved.

use crate::delivery::{NewProduct, ProductView};
use crate::ledger_ops::{OpenAccount, TransferOrder};
use crate::{Node, Principal, Result, Role, ServiceError};
use tally_kernel::{Amount, Currency, Id};
use tally_ledger::AccountKind;
use tally_proto::delivery::sale::ProductState;

/// The demo merchant.
pub const SHOP: &str = "demo-shop";
/// The demo customer (also the name of her dev inbox).
pub const CUSTOMER: &str = "ana";

/// What the demo data set holds.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The published product.
    pub product: ProductView,
    /// The customer's EUR account.
    pub customer_account: Id,
    /// The merchant's EUR account, which the product is paid to.
    pub shop_account: Id,
}

/// A principal of the seed (no API key stands behind it; its key id is fixed by its name).
fn seed_principal(role: Role, owner: &str) -> Principal {
    let digest = tally_kernel::crypto::kdf::sha256(format!("tally-demo:{owner}").as_bytes());
    Principal {
        key_id: Id::from_slice(&digest[..16]).unwrap_or_default(),
        role,
        owner: owner.to_string(),
    }
}

/// The product's one file: a short guide to the node, as text.
fn field_guide() -> Vec<u8> {
    let mut text = String::from(
        "The Tally field guide\n=====================\n\n\
         You bought this from a Tally node: it came to you locked, and the key that unlocked\n\
         it was released the moment your payment arrived. The package was signed by the node;\n\
         `tally package inspect` checks that signature and every file's SHA-256.\n\n",
    );
    for (i, line) in [
        "Locked delivery: download first, pay later, unlock with the key sent to you.",
        "Micropayment sessions: a deposit, many small payments, one clearing.",
        "Prepaid pads: anonymous key material with value, spent byte by byte.",
        "Out-of-band authentication: a code on a second channel confirms what you see.",
        "Signed receipts: both sides sign, or an arbiter decides; nobody is left holding nothing.",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!("{}. {line}\n", i + 1));
    }
    text.into_bytes()
}

impl Node {
    /// Seeds (or finds) the demo data set on a dev node; see the module's description.
    pub async fn seed_demo(&self) -> Result<Seeded> {
        if !self.is_dev() {
            return Err(ServiceError::Disabled("the demo data set needs --dev"));
        }
        let operator = seed_principal(Role::Admin, "operator");
        let shop = seed_principal(Role::Merchant, SHOP);
        let eur = || OpenAccount {
            owner: None,
            currency: "EUR".into(),
            kind: None,
            limit_minor: None,
            debits_must_not_exceed_credits: None,
            credits_must_not_exceed_debits: None,
            imported_at: None,
            history: None,
            references: Default::default(),
        };
        let (settlement, _) = self
            .open_account(
                &operator,
                Some("demo-settlement-eur"),
                OpenAccount {
                    kind: Some(AccountKind::Settlement),
                    limit_minor: Some(10_000_000),
                    debits_must_not_exceed_credits: Some(true),
                    ..eur()
                },
            )
            .await?;
        let (shop_account, _) = self
            .open_account(&shop, Some("demo-shop-eur"), eur())
            .await?;
        let (customer_account, _) = self
            .open_account(
                &operator,
                Some("demo-customer-eur"),
                OpenAccount {
                    owner: Some(CUSTOMER.into()),
                    kind: Some(AccountKind::Customer),
                    ..eur()
                },
            )
            .await?;
        self.transfer_money(
            &operator,
            "demo-fund-customer",
            TransferOrder {
                debit_account: settlement.id,
                credit_account: customer_account.id,
                amount: Amount::new(50_00, Currency::from_code("EUR")?),
                timeout_s: None,
                memo: Some("demo funds".into()),
                notify: None,
            },
        )
        .await?;
        self.oob()
            .seed_verified_address(CUSTOMER, "dev", CUSTOMER)
            .await?;
        let (product, _) = self
            .delivery()
            .product_create(
                &shop,
                "demo-product",
                NewProduct {
                    title: "The Tally field guide".into(),
                    price: Amount::new(4_90, Currency::from_code("EUR")?),
                    pay_to: shop_account.id,
                    producer: Some("tally-press".into()),
                    licence: "Read, print and share with friends; do not resell.".into(),
                    instructions: "Thank you for buying! The key unlocks the guide.".into(),
                    registration_template: None,
                },
            )
            .await?;
        let product = if product.state == ProductState::Draft {
            self.delivery()
                .product_upload(
                    &shop,
                    product.id,
                    "field-guide.txt",
                    "product",
                    std::io::Cursor::new(field_guide()),
                )
                .await?;
            self.delivery().product_publish(&shop, product.id).await?
        } else {
            product
        };
        Ok(Seeded {
            product,
            customer_account: customer_account.id,
            shop_account: shop_account.id,
        })
    }
}
