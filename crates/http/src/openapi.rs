//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! DTOs' `ToSchema` derives.
//!
//! Key decision: the document is derived from the code, not written by hand, and a test walks
//! every documented path against the real router, so the two cannot drift apart silently.
//! Rejected: `utoipa-axum`'s `OpenApiRouter` (one more dependency and a second router type for a
//! fixed, small route table) and a hand-written YAML file (drifts on the first change).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::error::{ErrorBody, ErrorCode, ErrorDetail};
use crate::{delivery, federation, handlers, oob, ops, pad_providers, pads, receipts};

/// Declares the bearer API-key scheme the `/v1` operations use.
struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description =
            Some("An API key: `Authorization: Bearer tally_<role>_<hex>`".to_string());
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Accounts, transfers, holds and exchanges on a double-entry ledger. \
            Money is integer minor units; every write that moves money needs an `Idempotency-Key`. \
            Errors are `{\"error\":{\"code\",\"message\",\"details\"}}` with a stable `code`."
    ),
    paths(
        ops::healthz,
        ops::node,
        ops::metrics,
        ops::openapi_json,
        federation::add_peer,
        federation::peers,
        federation::peer,
        federation::ping,
        federation::receive,
        pads::sell,
        pads::view,
        pads::tariff,
        pads::frame,
        pads::issue_vouchers,
        pads::voucher,
        pads::sell_voucher,
        pads::cancel_voucher,
        pads::redeem_voucher,
        pads::stock,
        pads::activate,
        pads::cancel_stock,
        pads::open_account,
        pads::show_account,
        pads::cancel_account_pad,
        pads::buy_from_account,
        pads::transfer_account_pad,
        pad_providers::allow,
        pad_providers::register,
        pad_providers::provider,
        pad_providers::request,
        pad_providers::reply,
        pad_providers::settle,
        pad_providers::verdict,
        pad_providers::pay,
        pad_providers::payout_pad,
        pad_providers::recovery,
        pad_providers::cancel_by_code,
        pad_providers::alias,
        federation::open_session,
        federation::sessions,
        federation::session,
        federation::answer,
        federation::set_merchant,
        federation::agent_key,
        federation::record,
        federation::end,
        federation::verdict,
        federation::next_transaction,
        federation::receipts,
        federation::send_order_key,
        federation::order_key,
        federation::escrow,
        federation::escrowed,
        federation::billing,
        federation::clearing,
        federation::fx_publish,
        federation::fx_tables,
        handlers::open_account,
        handlers::list_accounts,
        handlers::account,
        handlers::account_transfers,
        handlers::create_transfer,
        handlers::create_transfer_batch,
        handlers::query_transfers,
        handlers::account_history,
        crate::changes::transfer_changes,
        handlers::transfer,
        handlers::create_hold,
        handlers::post_hold,
        handlers::void_hold,
        handlers::exchange,
        handlers::create_api_key,
        handlers::list_api_keys,
        handlers::revoke_api_key,
        handlers::dev_inbox,
        handlers::audit,
        oob::upsert_subscriber,
        oob::add_address,
        oob::addresses,
        oob::issue_certificate,
        oob::statement,
        oob::open_session,
        oob::sessions,
        oob::session,
        oob::verify,
        oob::cancel,
        oob::whoami,
        oob::sign_out,
        oob::set_rule,
        oob::certificates,
        oob::mailbox,
        oob::deposit_offer,
        oob::settle,
        oob::set_trustee_limit,
        oob::trustee_credit,
        delivery::create_product,
        delivery::products,
        delivery::product,
        delivery::upload_entry,
        delivery::publish_product,
        delivery::withdraw_product,
        delivery::buy,
        delivery::sale,
        delivery::sale_by_reference,
        delivery::package,
        delivery::acknowledge,
        delivery::cancel,
        delivery::pay,
        delivery::set_receiver,
        delivery::notification,
        delivery::sale_key,
        delivery::complaint,
        delivery::refund,
        delivery::report,
        receipts::node,
        receipts::offer_warrant,
        receipts::issue_token,
        receipts::tokens,
        receipts::token_writes,
        receipts::add_warrant,
        receipts::warrants,
        receipts::revoke_warrant,
        receipts::offer,
        receipts::list,
        receipts::receipt,
        receipts::escrow,
        receipts::sign,
        receipts::ack,
        receipts::package,
        receipts::abort,
        receipts::resolve,
        receipts::revoke_party,
        receipts::verify,
        receipts::arbiter_key,
        receipts::arbiter_decide,
        receipts::arbiter_resolve_for_b,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, dto::Money, dto::AccountKindDto, dto::RoleDto)),
    modifiers(&ApiKeyAuth),
    tags(
        (name = "accounts", description = "Open and read accounts"),
        (name = "transfers", description = "Move money and exchange currencies"),
        (name = "holds", description = "Two-phase transfers: hold, then post or void"),
        (name = "api-keys", description = "Operator: issue and revoke API keys"),
        (name = "ledger", description = "Operator: audit"),
        (name = "dev", description = "Development inbox (`--dev` only)"),
        (name = "oob", description = "Out-of-band authentication: subscribers, sessions, codes, registers (docs/protocols/oob.md)"),
        (name = "delivery", description = "Locked delivery: products, sales, packages, payments by reference, keys, reports (docs/protocols/delivery-api.md)"),
        (name = "receipts", description = "Two-party signed receipts: tokens, warrants, the receipt protocol, fair exchange and the arbiter (docs/protocols/receipts.md)"),
        (name = "federation", description = "Operator: peer nodes of other operators, and the sealed messages between them (docs/protocols/sessions.md)"),
        (name = "pads", description = "Anonymous prepaid pads: the counter sale, the tariff, and frames from pad holders (docs/protocols/pads.md)"),
        (name = "ops", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;
