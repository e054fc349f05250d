//! Per-message calls in batches of 10 (SQS's limit): deleting and changing visibility by
//! receipt handle, for any queue.

use super::connection::{CALL_TIMEOUT, call};
use crate::QueueError;
use aws_sdk_sqs::Client;
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
        let entries = pending
            .iter()
            .map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
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
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.as_ref())
                    .visibility_timeout(seconds)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let changed = call(
            "changing the visibility of messages",
            CALL_TIMEOUT,
            sqs.change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send(),
        )
        .await;
        match changed {
            Ok(out) => {
                if let Some(f) = out.failed().first() {
                    first_error.get_or_insert(QueueError::Unavailable(format!(
                        "changing visibility: {} {}",
                        f.code(),
                        f.message().unwrap_or_default()
                    )));
                }
            }
            Err(f) => {
                first_error.get_or_insert(f.into());
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
