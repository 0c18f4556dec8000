//! Pads (issue [8]): the operator's counter sale, view and tariff, and frames from holders.

use crate::{Answer, Call, Client, Error, seg};
use bytes::Bytes;
use reqwest::Method;
use tally_wire::pads::{
    PadAccountBuyRequest, PadAccountOpenRequest, PadAccountPin, PadAccountView, PadActivateRequest,
    PadSaleRequest, PadSold, PadStockCancelRequest, PadStockRequest, PadStocked, PadTariff,
    PadTransferRequest, PadTransferred, PadView, StockView, VoucherIssueRequest,
    VoucherRedeemRequest, VoucherSellRequest, VoucherView, VouchersIssued,
};
use tally_wire::pads::{PadAlias, PadAliasRequest};
use tally_wire::pads::{
    PadAllowRequest, PadAllowed, PadForwardView, PadPaid, PadPayRequest, PadPayoutRequest,
    PadProviderRequest, PadProviderView, PadRecovery, PadRecoveryRequest, PadReplyRequest,
    PadSettlement, PadVerdict,
};

impl Client {
    /// `POST /v1/pads` (operator): sell a pad at the counter. A retry with the same key
    /// answers the same pad and file.
    pub async fn pad_sell(
        &self,
        req: &PadSaleRequest,
        key: &str,
    ) -> Result<Answer<PadSold>, Error> {
        self.send(Method::POST, "/v1/pads".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/pads/{pad}` (operator).
    pub async fn pad(&self, pad: &str) -> Result<PadView, Error> {
        self.get(format!("/v1/pads/{}", seg(pad))).await
    }

    /// `PUT /v1/pad-tariff/{currency}` (operator).
    pub async fn pad_tariff(&self, currency: &str, tariff: &PadTariff) -> Result<PadTariff, Error> {
        Ok(self
            .send(
                Method::PUT,
                format!("/v1/pad-tariff/{}", seg(currency)),
                tariff,
                None,
            )
            .await?
            .value)
    }

    /// `POST /v1/pad-frames`: an up frame, answered with the down frame. The same frame again
    /// is answered the same and changes nothing, so it is retried after a lost answer.
    pub async fn pad_frame(&self, frame: Vec<u8>) -> Result<Answer<Bytes>, Error> {
        let mut call = Call::new(Method::POST, "/v1/pad-frames".to_string())
            .raw("application/octet-stream", Bytes::from(frame));
        call.once_only = true;
        self.call_bytes_answer(call).await
    }

    /// `POST /v1/vouchers` (operator): blank cards for a retailer; the same key answers the
    /// same cards.
    pub async fn vouchers_issue(
        &self,
        req: &VoucherIssueRequest,
        key: &str,
    ) -> Result<Answer<VouchersIssued>, Error> {
        self.send(Method::POST, "/v1/vouchers".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/vouchers/{serial}` (the operator or its retailer).
    pub async fn voucher(&self, serial: &str) -> Result<VoucherView, Error> {
        self.get(format!("/v1/vouchers/{}", seg(serial))).await
    }

    /// `POST /v1/vouchers/{serial}/sell` (its retailer): sold at the till. Selling it again
    /// from the same account answers the same, so it is retried.
    pub async fn voucher_sell(
        &self,
        serial: &str,
        req: &VoucherSellRequest,
    ) -> Result<Answer<VoucherView>, Error> {
        let mut call =
            Call::new(Method::POST, format!("/v1/vouchers/{}/sell", seg(serial))).json(req)?;
        call.once_only = true;
        self.call(call).await
    }

    /// `POST /v1/vouchers/{serial}/cancel` (operator).
    pub async fn voucher_cancel(&self, serial: &str) -> Result<VoucherView, Error> {
        let call = Call::new(Method::POST, format!("/v1/vouchers/{}/cancel", seg(serial)));
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/vouchers/redeem` (no API key needed): a sold card for a new pad; the same
    /// code again answers the same pad, so it is retried.
    pub async fn voucher_redeem(
        &self,
        req: &VoucherRedeemRequest,
    ) -> Result<Answer<PadSold>, Error> {
        let mut call = Call::new(Method::POST, "/v1/vouchers/redeem".to_string()).json(req)?;
        call.once_only = true;
        self.call(call).await
    }

    /// `POST /v1/pad-stock` (operator): a blank pad for a retailer; the same key answers the
    /// same pad.
    pub async fn pad_stock(
        &self,
        req: &PadStockRequest,
        key: &str,
    ) -> Result<Answer<PadStocked>, Error> {
        self.send(Method::POST, "/v1/pad-stock".to_string(), req, Some(key))
            .await
    }

    /// `POST /v1/pad-stock/{serial}/activate` (its retailer); the same activation again
    /// answers the same, so it is retried.
    pub async fn pad_activate(
        &self,
        serial: &str,
        req: &PadActivateRequest,
    ) -> Result<Answer<StockView>, Error> {
        let mut call = Call::new(
            Method::POST,
            format!("/v1/pad-stock/{}/activate", seg(serial)),
        )
        .json(req)?;
        call.once_only = true;
        self.call(call).await
    }

    /// `POST /v1/pad-stock/{serial}/cancel`: stolen stock; answers the replacement (again:
    /// the same one, so it is retried).
    pub async fn pad_stock_cancel(
        &self,
        serial: &str,
        req: &PadStockCancelRequest,
    ) -> Result<PadStocked, Error> {
        let mut call = Call::new(
            Method::POST,
            format!("/v1/pad-stock/{}/cancel", seg(serial)),
        )
        .json(req)?;
        call.once_only = true;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-accounts` (no API key): a new PIN account.
    pub async fn pad_account_open(
        &self,
        req: &PadAccountOpenRequest,
    ) -> Result<PadAccountView, Error> {
        let call = Call::new(Method::POST, "/v1/pad-accounts".to_string()).json(req)?;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-accounts/{account}/show`: its value (the PIN in the body).
    pub async fn pad_account(
        &self,
        account: &str,
        pin: &PadAccountPin,
    ) -> Result<PadAccountView, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/pad-accounts/{}/show", seg(account)),
        )
        .json(pin)?;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-accounts/{account}/pads/{pad}/cancel`: a lost pad's value back.
    pub async fn pad_account_cancel(
        &self,
        account: &str,
        pad: &str,
        pin: &PadAccountPin,
    ) -> Result<PadAccountView, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/pad-accounts/{}/pads/{}/cancel", seg(account), seg(pad)),
        )
        .json(pin)?;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-accounts/{account}/pads`: a pad from the account's value; the same key
    /// answers the same pad.
    pub async fn pad_account_buy(
        &self,
        account: &str,
        req: &PadAccountBuyRequest,
        key: &str,
    ) -> Result<Answer<PadSold>, Error> {
        self.send(
            Method::POST,
            format!("/v1/pad-accounts/{}/pads", seg(account)),
            req,
            Some(key),
        )
        .await
    }

    /// `POST /v1/pad-accounts/{account}/pads/{pad}/transfer`: the pad to another account, with
    /// the node's signed receipt.
    pub async fn pad_account_transfer(
        &self,
        account: &str,
        pad: &str,
        req: &PadTransferRequest,
    ) -> Result<PadTransferred, Error> {
        let call = Call::new(
            Method::POST,
            format!(
                "/v1/pad-accounts/{}/pads/{}/transfer",
                seg(account),
                seg(pad)
            ),
        )
        .json(req)?;
        Ok(self.call(call).await?.value)
    }

    /// `PUT /v1/pad-accounts/{account}/pads/{pad}/allow`: the providers the pad may pay.
    pub async fn pad_account_allow(
        &self,
        account: &str,
        pad: &str,
        req: &PadAllowRequest,
    ) -> Result<PadAllowed, Error> {
        let call = Call::new(
            Method::PUT,
            format!("/v1/pad-accounts/{}/pads/{}/allow", seg(account), seg(pad)),
        )
        .json(req)?;
        Ok(self.call(call).await?.value)
    }

    /// `PUT /v1/pad-providers/{name}`: register a provider or change its terms.
    pub async fn pad_provider_register(
        &self,
        name: &str,
        req: &PadProviderRequest,
    ) -> Result<PadProviderView, Error> {
        Ok(self
            .send(
                Method::PUT,
                format!("/v1/pad-providers/{}", seg(name)),
                req,
                None,
            )
            .await?
            .value)
    }

    /// `GET /v1/pad-providers/{name}`: a provider's terms.
    pub async fn pad_provider(&self, name: &str) -> Result<PadProviderView, Error> {
        self.get(format!("/v1/pad-providers/{}", seg(name))).await
    }

    /// `GET /v1/pad-providers/{name}/requests/{request}` (its owner): a forwarded request.
    pub async fn pad_provider_request(
        &self,
        name: &str,
        request: &str,
    ) -> Result<PadForwardView, Error> {
        self.get(format!(
            "/v1/pad-providers/{}/requests/{}",
            seg(name),
            seg(request)
        ))
        .await
    }

    /// `POST /v1/pad-providers/{name}/replies` (its owner): the answer to a request, into the
    /// asking pad's mailbox. Answered once; again: `replayed`.
    pub async fn pad_provider_reply(
        &self,
        name: &str,
        req: &PadReplyRequest,
    ) -> Result<Answer<PadForwardView>, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/pad-providers/{}/replies", seg(name)),
        )
        .json(req)?;
        self.call(call).await
    }

    /// `POST /v1/pad-settlements` (operator): pay out of clearing what it owes now.
    pub async fn pad_settle(&self) -> Result<PadSettlement, Error> {
        let call = Call::new(Method::POST, "/v1/pad-settlements".to_string());
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-escrows/{request}/verdict` (operator): decide a disputed escrow.
    pub async fn pad_escrow_verdict(
        &self,
        request: &str,
        verdict: &PadVerdict,
    ) -> Result<PadForwardView, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/pad-escrows/{}/verdict", seg(request)),
        )
        .json(verdict)?;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-providers/{name}/pay` (its owner): pay the holder of a request's pad; the
    /// same key answers the same payment.
    pub async fn pad_provider_pay(
        &self,
        name: &str,
        req: &PadPayRequest,
        key: &str,
    ) -> Result<Answer<PadPaid>, Error> {
        self.send(
            Method::POST,
            format!("/v1/pad-providers/{}/pay", seg(name)),
            req,
            Some(key),
        )
        .await
    }

    /// `POST /v1/pad-providers/{name}/payout-pad` (its owner): earnings paid out in a new pad;
    /// the same key answers the same pad.
    pub async fn pad_provider_payout(
        &self,
        name: &str,
        req: &PadPayoutRequest,
        key: &str,
    ) -> Result<Answer<PadSold>, Error> {
        self.send(
            Method::POST,
            format!("/v1/pad-providers/{}/payout-pad", seg(name)),
            req,
            Some(key),
        )
        .await
    }

    /// `PUT /v1/pad-accounts/{account}/recovery`: name the subscriber who may cancel lost
    /// pads by code (`confirmation_required` until the subscriber verified it; then again).
    pub async fn pad_account_recovery(
        &self,
        account: &str,
        req: &PadRecoveryRequest,
    ) -> Result<PadRecovery, Error> {
        let call = Call::new(
            Method::PUT,
            format!("/v1/pad-accounts/{}/recovery", seg(account)),
        )
        .json(req)?;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/pad-accounts/{account}/pads/{pad}/cancel-by-code`: a lost pad cancelled by
    /// the recovery subscriber's code (`confirmation_required` first; then again).
    pub async fn pad_account_cancel_by_code(
        &self,
        account: &str,
        pad: &str,
    ) -> Result<PadAccountView, Error> {
        let call = Call::new(
            Method::POST,
            format!(
                "/v1/pad-accounts/{}/pads/{}/cancel-by-code",
                seg(account),
                seg(pad)
            ),
        );
        Ok(self.call(call).await?.value)
    }

    /// `PUT /v1/pad-aliases/{key}` (no API key): the key's messages go to a pad's mailbox.
    pub async fn pad_alias(&self, key: &str, req: &PadAliasRequest) -> Result<PadAlias, Error> {
        let call = Call::new(Method::PUT, format!("/v1/pad-aliases/{}", seg(key))).json(req)?;
        Ok(self.call(call).await?.value)
    }
}
