//! Acceptance delivery at the operators' nodes (SPEC M9; `tally_proto::session::acceptance`):
//! the customer's K1 goes through its AM to the MTA, which signs it for the merchant
//! (`sign(K1)^MTA`); the merchant's agent escrows K2 here, sealed under `escrow.key`, and the
//! operator hands it to an arbiter in a dispute. The products, orders and packages never
//! reach a node.

use super::{AM, MTA, Sessions, body, decode, inconsistent, trade};
use crate::access::{invalid, require_admin};
use crate::{Missing, Principal, Result, ServiceError};
use tally_kernel::Id;
use tally_kernel::crypto::seal;
use tally_proto::effects::Effects;
use tally_proto::session::acceptance::{OrderKey, key_bytes};
use tally_proto::session::envelope::Envelope;
use tally_proto::session::trade::{AmInput, MtaSession};
use tally_store::Attachment;
use tally_store::trade::{OrderKeyRow, escrow, insert_order_key};
use tally_wire::federation::{EscrowView, OrderKeyQueued, SignedOrderKey};

/// What `session_order_key` carries.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderKeyMessage {
    session: String,
    order: Id,
    k1: String,
}

/// The associated data K2 is sealed under here: it opens for its session and order only.
fn escrow_aad(session: &str, order: &str) -> Vec<u8> {
    format!("tally/escrow/v1\0{session}\0{order}").into_bytes()
}

impl Sessions {
    fn escrow_key(&self) -> &[u8; 32] {
        // `node_secret` accepts 32-byte secrets only.
        self.escrow_key
            .expose()
            .as_slice()
            .try_into()
            .expect("the escrow key is 32 bytes")
    }

    /// The customer sends K1 of an order to the MTA through its AM (M9: "the consumer sends
    /// K1 to the trusted party"). Sending the same K1 again changes nothing.
    pub async fn send_order_key(
        &self,
        by: &Principal,
        session: &str,
        order: Id,
        k1: &str,
    ) -> Result<OrderKeyQueued> {
        crate::exec::retrying(|| async {
            let row = self
                .core
                .store()
                .trade(AM, session)
                .await?
                .filter(|r| r.owner == by.owner)
                .ok_or_else(|| self.missing(session))?;
            let before = self.am_machine(&row).await?;
            let (after, effects) = before
                .handle(
                    self.core.now(),
                    AmInput::OrderKey {
                        order,
                        k1: k1.to_string(),
                        message: Id::new(),
                    },
                )
                .map_err(trade)?;
            let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
            // One K1 per order: the same again is a replay; another one is refused
            // (the step's journal entry names K1 by its hash).
            self.core
                .commit(
                    format!(":session_order_key:{session}:{order}"),
                    effects,
                    rows.into(),
                )
                .await?;
            Ok(OrderKeyQueued {
                session: session.to_string(),
                order: order.to_string(),
            })
        })
        .await
    }

    /// The MTA takes K1 of an order from the session's AM, and signs it for the merchant.
    pub(super) async fn order_keyed(&self, m: &Envelope) -> Result<(Effects, Vec<Attachment>)> {
        let msg: OrderKeyMessage = body(m)?;
        let row = self.named_row(MTA, &msg.session).await?;
        let s: MtaSession = decode(&row)?;
        if s.am != m.from || !s.takes_orders() || key_bytes(&msg.k1).is_err() {
            return Err(inconsistent());
        }
        if let Some(before) = self
            .core
            .store()
            .order_key(&msg.session, &msg.order.to_string())
            .await?
        {
            // Another message with another K1 for an order keyed before.
            let same = serde_json::from_str::<tally_kernel::crypto::SignedRecord>(&before.signed)
                .ok()
                .and_then(|r| serde_json::from_slice::<OrderKey>(&r.bytes).ok())
                .is_some_and(|k| k.k1 == msg.k1);
            return if same {
                Ok((super::peer_record(m), Vec::new()))
            } else {
                Err(inconsistent())
            };
        }
        let signed = OrderKey {
            transaction: s.transaction(),
            order: msg.order,
            k1: msg.k1,
        }
        .sign(self.core.node_key());
        let text = String::from_utf8(signed).map_err(crate::access::corrupt)?;
        let effects = Effects::record(
            "session_order_key",
            serde_json::json!({"session": msg.session, "order": msg.order}),
        );
        Ok((
            effects,
            vec![insert_order_key(
                &OrderKeyRow {
                    session: msg.session,
                    order: msg.order.to_string(),
                    signed: text,
                    k2_sealed: None,
                    package: None,
                },
                self.core.now(),
            )],
        ))
    }

    /// The merchant's row of `session` at the MTA, and the order's keys there.
    async fn merchant_order(
        &self,
        by: &Principal,
        session: &str,
        order: &str,
    ) -> Result<OrderKeyRow> {
        self.core
            .store()
            .trade(MTA, session)
            .await?
            .filter(|r| r.owner == by.owner || by.is_admin())
            .ok_or_else(|| self.missing(session))?;
        self.core
            .store()
            .order_key(session, order)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Order,
                id: order.to_string(),
            })
    }

    /// K1 of an order as this node signed it (the merchant): `404` until it arrived.
    pub async fn signed_order_key(
        &self,
        by: &Principal,
        session: &str,
        order: &str,
    ) -> Result<SignedOrderKey> {
        let row = self.merchant_order(by, session, order).await?;
        Ok(SignedOrderKey { signed: row.signed })
    }

    /// The merchant's agent escrows K2 of the package it sent for an order (again for a
    /// re-send: the newest package's K2 is kept).
    pub async fn escrow(
        &self,
        by: &Principal,
        session: &str,
        order: &str,
        k2: &str,
        package: &str,
    ) -> Result<()> {
        let row = self.merchant_order(by, session, order).await?;
        let key = key_bytes(k2).map_err(|_| invalid("k2", "64 hex digits"))?;
        if package.len() != 64 || hex::decode(package).is_err() {
            return Err(invalid(
                "package",
                "the SHA-256 of the signed package, 64 hex",
            ));
        }
        if row.package.as_deref() == Some(package) {
            return Ok(());
        }
        let sealed = seal::seal(self.escrow_key(), &escrow_aad(session, order), &key)
            .map_err(crate::access::corrupt)?;
        self.core
            .commit(
                format!(":session_escrow:{session}:{order}:{package}"),
                Effects::record(
                    "session_escrow",
                    serde_json::json!({"session": session, "order": order, "package": package}),
                ),
                vec![escrow(session, order, sealed, package, self.core.now())],
            )
            .await?;
        Ok(())
    }

    /// K2 of an order, for an arbiter (the operator): the dispute of M9.
    pub async fn escrowed(&self, by: &Principal, session: &str, order: &str) -> Result<EscrowView> {
        require_admin(by)?;
        let row = self.merchant_order(by, session, order).await?;
        let (Some(sealed), Some(package)) = (row.k2_sealed, row.package) else {
            return Err(ServiceError::NotFound {
                what: Missing::Order,
                id: format!("{order} (no K2 escrowed)"),
            });
        };
        let k2 = seal::open(self.escrow_key(), &escrow_aad(session, order), &sealed)
            .map_err(crate::access::corrupt)?;
        tracing::info!(%session, %order, "escrowed K2 handed to an arbiter");
        Ok(EscrowView {
            session: session.to_string(),
            order: order.to_string(),
            k2: hex::encode(k2.expose()),
            package,
        })
    }
}
