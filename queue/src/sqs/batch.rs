//! Per-message calls in batches of 10 (SQS's limit): deleting and changing visibility by
//! receipt handle, for any queue.

use super::connection::{CALL_TIMEOUT, Failure, call};
use crate::QueueError;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use std::time::Duration;
use tokio::task::JoinSet;

/// SQS's most entries per batch call.
pub(super) const BATCH: usize = 10;
/// Tries of a delete entry SQS failed on its side.
const DELETE_TRIES: u32 = 3;

/// Deletes every message (batches in parallel). The error says how many were not deleted.
pub(super) async fn delete(
    sqs: &Client,
    url: &str,
    receipts: Vec<String>,
) -> Result<(), (usize, QueueError)> {
    let mut calls = JoinSet::new();
    for chunk in receipts.chunks(BATCH) {
        calls.spawn(delete_ten(sqs.clone(), url.to_owned(), chunk.to_vec()));
    }
    let mut failed = 0usize;
    let mut last = None;
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err((n, e))) => {
                failed += n;
                last = Some(e);
            }
            Err(e) => {
                failed += BATCH;
                last = Some(QueueError::Unavailable(format!("deleting: {e}")));
            }
        }
    }
    last.map_or(Ok(()), |e| Err((failed.min(receipts.len()), e)))
}

/// Deletes up to 10 messages, retrying entries SQS failed on its side.
async fn delete_ten(
    sqs: Client,
    url: String,
    receipts: Vec<String>,
) -> Result<(), (usize, QueueError)> {
    let mut pending: Vec<(usize, String)> = receipts.into_iter().enumerate().collect();
    for attempt in 0..DELETE_TRIES {
        let named = pending.iter().map(|(i, r)| (i.to_string(), r.as_str()));
        let entries = entries(named, |id, receipt| {
            DeleteMessageBatchRequestEntry::builder()
                .id(id)
                .receipt_handle(receipt)
                .build()
        });
        let out = call(
            "deleting messages",
            CALL_TIMEOUT,
            sqs.delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send(),
        )
        .await
        .map_err(|f| (pending.len(), QueueError::from(f)))?;
        let mut again = Vec::new();
        let mut refused = None;
        for failed in out.failed() {
            let Some(entry) = pending.iter().find(|(i, _)| i.to_string() == failed.id()) else {
                continue;
            };
            refused = Some(format!(
                "SQS refused a delete: {} {}",
                failed.code(),
                failed.message().unwrap_or_default()
            ));
            // A sender fault is an expired receipt: the message was (or will be) handed
            // out again, and the store recognizes it. Nothing to retry.
            if !failed.sender_fault() {
                again.push(entry.clone());
            }
        }
        if again.is_empty() {
            return match refused {
                None => Ok(()),
                Some(why) => Err((out.failed().len(), QueueError::Unavailable(why))),
            };
        }
        pending = again;
        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
    }
    Err((
        pending.len(),
        QueueError::Unavailable("SQS did not delete messages after retries".into()),
    ))
}

/// Sets the visibility timeout of every message (best effort; returns the first failure).
pub(super) async fn set_visibility<S: AsRef<str>>(
    sqs: &Client,
    url: &str,
    receipts: &[S],
    seconds: i32,
) -> Result<(), QueueError> {
    let mut first_error = None;
    for chunk in receipts.chunks(BATCH) {
        let named = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), r.as_ref()));
        let refused = match change_visibility(sqs, url, named, seconds).await {
            Ok(out) => out.failed().first().map(|f| {
                QueueError::Unavailable(format!(
                    "changing visibility: {} {}",
                    f.code(),
                    f.message().unwrap_or_default()
                ))
            }),
            Err(f) => Some(f.into()),
        };
        if let Some(e) = refused {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One `ChangeMessageVisibilityBatch` call: up to 10 (entry id, receipt) to `seconds`.
pub(super) async fn change_visibility<'a>(
    sqs: &Client,
    url: &str,
    named: impl IntoIterator<Item = (String, &'a str)>,
    seconds: i32,
) -> Result<ChangeMessageVisibilityBatchOutput, Failure> {
    let entries = entries(named, |id, receipt| {
        ChangeMessageVisibilityBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .build()
    });
    let changing = sqs
        .change_message_visibility_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send();
    call(
        "changing the visibility of messages",
        CALL_TIMEOUT,
        changing,
    )
    .await
}

/// A batch call's entries from (entry id, receipt). The SDK refuses to build an entry
/// only when a required field is unset, and both always are: none is ever left out.
fn entries<'a, T, E>(
    named: impl IntoIterator<Item = (String, &'a str)>,
    build: impl Fn(String, &'a str) -> Result<T, E>,
) -> Vec<T> {
    named
        .into_iter()
        .filter_map(|(id, receipt)| build(id, receipt).ok())
        .collect()
}
