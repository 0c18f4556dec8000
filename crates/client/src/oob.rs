//! Out-of-band authentication: the directory, sessions and what they leave behind.

use crate::{Answer, Call, Client, Error, query, seg};
use reqwest::Method;
use tally_wire::oob::{
    AddressRequest, AddressView, CertificateRequest, CertificateView, IssuedCertificate, MailView,
    OfferDeposited, OfferRequest, OpenSession, Opened, RuleRequest, SessionView, SettleRequest,
    Settlement, Statement, SubscriberRequest, TrusteeCredit, TrusteeLimitRequest, VerifyRequest,
    VerifyResponse, WhoAmI,
};

impl Client {
    /// `POST /v1/subscribers/{user}`: add a subscriber or set its stored account.
    pub async fn subscriber_set(&self, user: &str, req: &SubscriberRequest) -> Result<(), Error> {
        let call = Call::new(Method::POST, format!("/v1/subscribers/{}", seg(user))).json(req)?;
        self.call_empty(call).await
    }

    /// `POST /v1/subscribers/{user}/addresses`: a code goes to the address; confirm the
    /// session that comes back like any other.
    pub async fn address_add(
        &self,
        user: &str,
        req: &AddressRequest,
    ) -> Result<SessionView, Error> {
        let path = format!("/v1/subscribers/{}/addresses", seg(user));
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `GET /v1/subscribers/{user}/addresses`.
    pub async fn addresses(&self, user: &str) -> Result<Vec<AddressView>, Error> {
        self.get(format!("/v1/subscribers/{}/addresses", seg(user)))
            .await
    }

    /// `POST /v1/subscribers/{user}/certificate` (operator): a certificate naming channel B,
    /// and its private key (once).
    pub async fn certificate_issue(
        &self,
        user: &str,
        req: &CertificateRequest,
    ) -> Result<IssuedCertificate, Error> {
        let path = format!("/v1/subscribers/{}/certificate", seg(user));
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `GET /v1/subscribers/{user}/statement` between RFC 3339 times (default: 31 days to now).
    pub async fn statement(
        &self,
        user: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Statement, Error> {
        let q = query(&[
            ("from", from.map(str::to_string)),
            ("to", to.map(str::to_string)),
        ]);
        self.get(format!("/v1/subscribers/{}/statement{q}", seg(user)))
            .await
    }

    /// `POST /v1/oob/sessions`: a session waiting for its code, or (below the threshold) the
    /// transfer made at once. With a key, a retry returns the same session.
    pub async fn session_open(
        &self,
        key: Option<&str>,
        req: &OpenSession,
    ) -> Result<Opened, Error> {
        let answer: Answer<Opened> = self
            .send(Method::POST, "/v1/oob/sessions".to_string(), req, key)
            .await?;
        Ok(answer.value)
    }

    /// `GET /v1/oob/sessions?user=`: newest first.
    pub async fn sessions(&self, user: &str) -> Result<Vec<SessionView>, Error> {
        let q = query(&[("user", Some(user.to_string()))]);
        self.get(format!("/v1/oob/sessions{q}")).await
    }

    /// `GET /v1/oob/sessions/{session}` (no key needed: the number is the capability).
    pub async fn session(&self, number: &str) -> Result<SessionView, Error> {
        self.get(format!("/v1/oob/sessions/{}", seg(number))).await
    }

    /// `POST /v1/oob/sessions/{session}/verify`: the code from channel B.
    pub async fn session_verify(
        &self,
        number: &str,
        req: &VerifyRequest,
    ) -> Result<VerifyResponse, Error> {
        let path = format!("/v1/oob/sessions/{}/verify", seg(number));
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `POST /v1/oob/sign-out`: the access token `token` stops working.
    pub async fn sign_out(&self, token: &str) -> Result<(), Error> {
        let mut call = Call::new(Method::POST, "/v1/oob/sign-out".to_string());
        call.bearer = Some(token.to_string());
        self.call_empty(call).await
    }

    /// `POST /v1/oob/sessions/{session}/cancel` (a payment's hold is released).
    pub async fn session_cancel(&self, number: &str) -> Result<SessionView, Error> {
        let path = format!("/v1/oob/sessions/{}/cancel", seg(number));
        let empty = serde_json::Map::new();
        Ok(self.send(Method::POST, path, &empty, None).await?.value)
    }

    /// `GET /v1/oob/whoami` with a login's access token (instead of the API key).
    pub async fn whoami(&self, access_token: &str) -> Result<WhoAmI, Error> {
        let call = Call::new(Method::GET, "/v1/oob/whoami".to_string()).bearer(access_token);
        Ok(self.call(call).await?.value)
    }

    /// `PUT /v1/oob/rules/{owner}`: amounts above this need out-of-band confirmation.
    pub async fn rule_set(&self, owner: &str, req: &RuleRequest) -> Result<(), Error> {
        let call = Call::new(Method::PUT, format!("/v1/oob/rules/{}", seg(owner))).json(req)?;
        self.call_empty(call).await
    }

    /// `GET /v1/certificates?user=`: node-signed records of what sessions certified.
    pub async fn certificates(&self, user: &str) -> Result<Vec<CertificateView>, Error> {
        let q = query(&[("user", Some(user.to_string()))]);
        self.get(format!("/v1/certificates{q}")).await
    }

    /// `GET /v1/mail?user=`: registered mail and offers for and from the user.
    pub async fn mail(&self, user: &str) -> Result<Vec<MailView>, Error> {
        let q = query(&[("user", Some(user.to_string()))]);
        self.get(format!("/v1/mail{q}")).await
    }

    /// `POST /v1/offers` (merchant): an offer in a user's mailbox.
    pub async fn offer_deposit(&self, req: &OfferRequest) -> Result<OfferDeposited, Error> {
        Ok(self
            .send(Method::POST, "/v1/offers".to_string(), req, None)
            .await?
            .value)
    }

    /// `POST /v1/trustee/settle` (operator): the payouts made and the debts collected.
    pub async fn trustee_settle(&self, req: &SettleRequest) -> Result<Settlement, Error> {
        Ok(self
            .send(Method::POST, "/v1/trustee/settle".to_string(), req, None)
            .await?
            .value)
    }

    /// `PUT /v1/trustee/credit/{user}` (operator): the user's trustee limit in a currency.
    pub async fn trustee_set_limit(
        &self,
        user: &str,
        req: &TrusteeLimitRequest,
    ) -> Result<TrusteeCredit, Error> {
        let call = Call::new(Method::PUT, format!("/v1/trustee/credit/{}", seg(user))).json(req)?;
        Ok(self.call(call).await?.value)
    }

    /// `GET /v1/trustee/credit/{user}`: limit, owed, held and available per currency.
    pub async fn trustee_credit(&self, user: &str) -> Result<Vec<TrusteeCredit>, Error> {
        self.get(format!("/v1/trustee/credit/{}", seg(user))).await
    }
}
