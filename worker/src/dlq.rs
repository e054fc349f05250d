//! `worker dlq …`: what an operator does with dead letters once their cause is fixed.

use crate::config::DlqAction;
use crate::error::Error;
use queue::{Admin, DeadLetter, DeadLetterFilter};
use serde_json::{Value, json};
use std::io::Write;

/// Runs one dead-letter action and writes its result to `out`.
pub async fn run(queue: &dyn Admin, action: &DlqAction, out: &mut dyn Write) -> Result<(), Error> {
    let write_err = |e: std::io::Error| Error::Config(format!("cannot write the result: {e}"));
    match action {
        DlqAction::List { max } => {
            for d in queue.dead_letters(*max).await? {
                writeln!(out, "{}", describe(&d)).map_err(write_err)?;
            }
        }
        DlqAction::Replay { ids, all } => {
            let filter = if *all {
                DeadLetterFilter::All
            } else {
                DeadLetterFilter::Ids(ids.clone())
            };
            let n = queue.replay_dead_letters(&filter).await?;
            writeln!(out, "replayed {n} dead letter(s) onto the ingest queue")
                .map_err(write_err)?;
        }
        DlqAction::Purge { yes } => {
            if !yes {
                return Err(Error::Config(
                    "purge deletes every dead letter for good; run it again with --yes".into(),
                ));
            }
            let n = queue.purge_dead_letters().await?;
            writeln!(out, "purged {n} dead letter(s)").map_err(write_err)?;
        }
    }
    Ok(())
}

/// One JSON line: the envelope's fields when the payload is one, the raw text otherwise.
fn describe(d: &DeadLetter) -> Value {
    match serde_json::from_slice::<Value>(&d.payload) {
        Ok(envelope @ Value::Object(_)) => json!({
            "id": envelope.get("id"),
            "room": envelope.get("room"),
            "from": envelope.get("from"),
            "attempts": d.attempts,
            "reason": d.reason,
            "envelope": envelope,
        }),
        _ => json!({
            "attempts": d.attempts,
            "reason": d.reason,
            "payload": String::from_utf8_lossy(&d.payload),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::memory::MemoryQueue;
    use queue::{Consume, Publish, QueueOptions};
    use std::time::Duration;

    #[tokio::test]
    async fn list_replay_and_purge_on_the_memory_queue() {
        let q = MemoryQueue::new(QueueOptions {
            receive_wait: Duration::from_millis(50),
            ..Default::default()
        });
        for id in ["a", "b"] {
            let env = queue::contract::envelope("room-t", id);
            q.publish(&env.key(), env.to_json()).await.unwrap();
        }
        let mut c = q.consumer().await.unwrap();
        for d in c.receive(10).await.unwrap() {
            d.dead_letter("store refused").await.unwrap();
        }
        let mut out = Vec::new();
        run(&q, &DlqAction::List { max: 10 }, &mut out)
            .await
            .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0]["id"].as_str(), lines[0]["reason"].as_str()),
            (Some("a"), Some("store refused"))
        );

        let mut out = Vec::new();
        run(
            &q,
            &DlqAction::Replay {
                ids: vec!["b".into()],
                all: false,
            },
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().trim(),
            "replayed 1 dead letter(s) onto the ingest queue"
        );
        assert_eq!(c.receive(10).await.unwrap().len(), 1);

        let refused = run(&q, &DlqAction::Purge { yes: false }, &mut Vec::new()).await;
        assert!(refused.unwrap_err().to_string().contains("--yes"));
        let mut out = Vec::new();
        run(&q, &DlqAction::Purge { yes: true }, &mut out)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().trim(),
            "purged 1 dead letter(s)"
        );
    }
}
