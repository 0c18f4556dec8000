//! `GET /v1/transfers/changes`: the committed transfers as server-sent events, in journal
//! order, resumable from any position (issue [10]).
//!
//! Each event is one transfer: `event: transfer`, `id: {journal seq}.{index in the entry}`,
//! `data:` the transfer as `GET /v1/transfers/{id}` shows it. A client that reconnects sends the
//! last id it saw (`Last-Event-ID`, or `?after=`) and misses nothing, even when it dropped in
//! the middle of a batch's entry. The stream is read from the journal, so every node of one
//! database serves the same one; it wakes on this node's commits and re-reads every second for
//! other nodes' (a reader cannot be woken by another process's writer).

use crate::AppState;
use crate::dto::TransferDto;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Caller};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tally_service::{Node, Principal};
use utoipa::IntoParams;

/// Entries read per query.
const ENTRIES_PER_READ: i64 = 256;
/// How long a quiet stream waits before it re-reads for other nodes' commits.
const RECHECK: Duration = Duration::from_secs(1);

/// `?after=` of `GET /v1/transfers/changes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Start after this event id (`SEQ.INDEX`) or after the whole entry `SEQ`; absent: from
    /// the journal's beginning. `Last-Event-ID` takes precedence.
    pub after: Option<String>,
}

/// Where a stream stands: the last event sent, `(seq, index)`.
type Cursor = (i64, i64);

fn cursor(text: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_parameter("after", "SEQ or SEQ.INDEX, an id of this stream");
    let (seq, index) = match text.split_once('.') {
        Some((s, i)) => (s, Some(i)),
        None => (text, None),
    };
    let seq = seq.parse::<i64>().map_err(|_| bad())?;
    let index = match index {
        Some(i) => i.parse::<i64>().map_err(|_| bad())?,
        None => i64::MAX,
    };
    if seq < 0 || index < 0 {
        return Err(bad());
    }
    Ok((seq, index))
}

/// Committed transfers as server-sent events, from a journal position on (operator only).
#[utoipa::path(
    get, path = "/v1/transfers/changes", tag = "transfers",
    params(ChangesQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: transfer`, `id: SEQ.INDEX`, `data:` a transfer", content_type = "text/event-stream", body = String),
        (status = 400, description = "invalid_request: a malformed position", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn transfer_changes(
    State(state): State<AppState>,
    Caller(by): Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_parameter("Last-Event-ID", "not text"))
        })
        .transpose()?;
    let at = match last.or(query.after.as_deref()) {
        Some(text) => cursor(text)?,
        None => (0, i64::MAX),
    };
    // Refused before the stream starts (an error after would be a closed stream, not a 403).
    state.node.transfer_entries(&by, at.0, 1).await?;
    let follow = Follow {
        commits: state.node.store().commits(),
        node: state.node,
        by,
        at,
        queue: VecDeque::new(),
    };
    let stream = futures::stream::unfold(follow, Follow::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Follow {
    node: Node,
    by: Principal,
    commits: tokio::sync::watch::Receiver<i64>,
    at: Cursor,
    queue: VecDeque<Event>,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            // Seen before the read: a commit after it wakes `changed` below.
            self.commits.borrow_and_update();
            let entries = self
                .node
                .transfer_entries(&self.by, self.at.0, ENTRIES_PER_READ)
                .await
                .ok()?;
            for (seq, transfers) in entries {
                for (index, t) in transfers.into_iter().enumerate() {
                    let index = i64::try_from(index).unwrap_or(i64::MAX);
                    if (seq, index) <= self.at {
                        continue;
                    }
                    let data = serde_json::to_string(&TransferDto::from(t)).ok()?;
                    self.queue.push_back(
                        Event::default()
                            .event("transfer")
                            .id(format!("{seq}.{index}"))
                            .data(data),
                    );
                }
                // The whole entry is sent: the next read starts after it.
                self.at = (seq, i64::MAX);
            }
            if self.queue.is_empty() {
                tokio::select! {
                    changed = self.commits.changed() => {
                        if changed.is_err() {
                            return None; // the node is shutting down
                        }
                    }
                    () = tokio::time::sleep(RECHECK) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_as_whole_entries_or_single_events() {
        assert_eq!(cursor("12").ok(), Some((12, i64::MAX)));
        assert_eq!(cursor("12.3").ok(), Some((12, 3)));
        for bad in ["", "x", "12.", ".3", "-1", "12.-1", "1.2.3"] {
            assert!(cursor(bad).is_err(), "{bad}");
        }
    }
}
