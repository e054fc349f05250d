//! One delivery of the ingest queue and its settlement: the policy (attempts used up →
//! dead letter) decided here once, the mechanics ([`Settle`]) in each backend, and the
//! typed [`Token`] that ties a delivery to the backend that handed it out.

use crate::QueueError;
#[cfg(feature = "amqp")]
use crate::amqp;
#[cfg(feature = "sqs")]
use crate::sqs;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// How a failed delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// It will be delivered again after the delay.
    Retrying,
    /// It used up its attempts and went to the dead-letter place.
    DeadLettered,
}

/// A backend's handle on one delivery (tag, receipt handle…), opaque to callers. Typed
/// per backend, so a delivery settled by a queue it did not come from is an error
/// ([`QueueError::Unavailable`]) in every backend, never a panic or a wrong message.
pub enum Token {
    /// The embedded queue's delivery tag.
    Memory(u64),
    #[cfg(feature = "amqp")]
    Amqp(amqp::Ticket),
    #[cfg(feature = "sqs")]
    Sqs(sqs::Ticket),
}

impl Token {
    fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "embedded",
            #[cfg(feature = "amqp")]
            Self::Amqp(_) => "RabbitMQ",
            #[cfg(feature = "sqs")]
            Self::Sqs(_) => "SQS",
        }
    }

    fn foreign(&self, here: &str) -> QueueError {
        QueueError::Unavailable(format!(
            "a delivery of the {} queue was settled by the {here} queue",
            self.backend()
        ))
    }

    /// The embedded queue's tag, or an error for another backend's token.
    pub(crate) fn into_memory(self) -> Result<u64, QueueError> {
        match self {
            Self::Memory(tag) => Ok(tag),
            // Without the broker features this is the only variant.
            #[allow(unreachable_patterns)]
            other => Err(other.foreign("embedded")),
        }
    }

    #[cfg(feature = "amqp")]
    pub(crate) fn into_amqp(self) -> Result<amqp::Ticket, QueueError> {
        match self {
            Self::Amqp(t) => Ok(t),
            other => Err(other.foreign("RabbitMQ")),
        }
    }

    #[cfg(feature = "sqs")]
    pub(crate) fn into_sqs(self) -> Result<sqs::Ticket, QueueError> {
        match self {
            Self::Sqs(t) => Ok(t),
            other => Err(other.foreign("SQS")),
        }
    }
}

/// A delivery that failed, as a backend re-scheduling or burying it sees it.
#[derive(Clone, Copy, Debug)]
pub struct Failed<'a> {
    pub payload: &'a [u8],
    /// 1 on the first delivery.
    pub attempt: u32,
    pub reason: &'a str,
}

/// The backend side of settling deliveries: mechanics only. The policy (attempts used
/// up → dead letter) is [`Delivery::retry`]'s, decided once for every backend.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Deliveries of one message before it goes to the dead-letter place
    /// ([`QueueOptions::max_attempts`] of the queue that delivered it).
    fn max_attempts(&self) -> u32;
    async fn ack(&self, tokens: Vec<Token>) -> Result<(), QueueError>;
    /// Delivers it again after `delay` (it has attempts left).
    async fn retry(&self, token: Token, f: Failed<'_>, delay: Duration) -> Result<(), QueueError>;
    async fn dead_letter(&self, token: Token, f: Failed<'_>) -> Result<(), QueueError>;
    /// A delivery dropped without being settled: make it deliverable again.
    fn abandon(&self, token: Token);
}

/// A settled delivery's parts: its token, its backend, its payload.
type Taken = (Token, Arc<dyn Settle>, Vec<u8>);

/// One message received from the ingest queue. It owns its settlement: ack after the
/// store commit, or hand it back with `retry`; dropped unsettled, it is redelivered.
pub struct Delivery {
    pub payload: Vec<u8>,
    /// 1 on the first delivery.
    pub attempt: u32,
    token: Option<Token>,
    settle: Arc<dyn Settle>,
}

impl Delivery {
    pub fn new(payload: Vec<u8>, attempt: u32, token: Token, settle: Arc<dyn Settle>) -> Self {
        Self {
            payload,
            attempt,
            token: Some(token),
            settle,
        }
    }

    fn take(mut self) -> Result<Taken, QueueError> {
        // Settling consumes the delivery, so only `Drop` ever sees the token taken.
        let token = self
            .token
            .take()
            .ok_or_else(|| QueueError::Unavailable("a delivery was settled twice".into()))?;
        Ok((
            token,
            self.settle.clone(),
            std::mem::take(&mut self.payload),
        ))
    }

    pub async fn ack(self) -> Result<(), QueueError> {
        let (token, settle, _) = self.take()?;
        settle.ack(vec![token]).await
    }

    /// Acks many deliveries with as few broker calls as the backend allows.
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<(), QueueError> {
        let mut groups: Vec<(Arc<dyn Settle>, Vec<Token>)> = Vec::new();
        for d in deliveries {
            let (token, settle, _) = d.take()?;
            match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &settle)) {
                Some((_, tokens)) => tokens.push(token),
                None => groups.push((settle, vec![token])),
            }
        }
        for (settle, tokens) in groups {
            settle.ack(tokens).await?;
        }
        Ok(())
    }

    /// Delivers it again after `delay`, or dead-letters it when its attempts are used up.
    /// The one place that rule lives: backends only re-schedule or bury.
    pub async fn retry(self, delay: Duration, reason: &str) -> Result<Settled, QueueError> {
        self.fail(reason, Some(delay)).await
    }

    /// Sends it straight to the dead-letter place (it can never succeed).
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        self.fail(reason, None).await.map(|_| ())
    }

    /// Re-schedules it after the delay while it has attempts left; buries it otherwise.
    async fn fail(self, reason: &str, delay: Option<Duration>) -> Result<Settled, QueueError> {
        let attempt = self.attempt;
        let (token, settle, payload) = self.take()?;
        let failed = Failed {
            payload: &payload,
            attempt,
            reason,
        };
        match delay {
            Some(delay) if attempt < settle.max_attempts() => {
                settle.retry(token, failed, delay).await?;
                tracing::debug!(
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "delivery scheduled for a retry"
                );
                Ok(Settled::Retrying)
            }
            _ => {
                settle.dead_letter(token, failed).await?;
                Ok(Settled::DeadLettered)
            }
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.settle.abandon(token);
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("bytes", &self.payload.len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records which settlement a backend was asked for.
    struct Recorder {
        max_attempts: u32,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Recorder {
        fn record(&self, token: Token, call: &'static str) -> Result<(), QueueError> {
            token.into_memory()?;
            self.calls.lock().unwrap().push(call);
            Ok(())
        }
    }

    #[async_trait]
    impl Settle for Recorder {
        fn max_attempts(&self) -> u32 {
            self.max_attempts
        }
        async fn ack(&self, _: Vec<Token>) -> Result<(), QueueError> {
            self.calls.lock().unwrap().push("ack");
            Ok(())
        }
        async fn retry(&self, token: Token, _: Failed<'_>, _: Duration) -> Result<(), QueueError> {
            self.record(token, "retry")
        }
        async fn dead_letter(&self, token: Token, _: Failed<'_>) -> Result<(), QueueError> {
            self.record(token, "dead_letter")
        }
        fn abandon(&self, _: Token) {
            self.calls.lock().unwrap().push("abandon");
        }
    }

    #[tokio::test]
    async fn retry_dead_letters_once_the_attempts_are_used_up() {
        let settle = Arc::new(Recorder {
            max_attempts: 2,
            calls: Mutex::new(Vec::new()),
        });
        let delivery =
            |attempt| Delivery::new(Vec::new(), attempt, Token::Memory(1), settle.clone());
        let wait = Duration::from_millis(1);
        assert_eq!(
            delivery(1).retry(wait, "r").await.unwrap(),
            Settled::Retrying
        );
        assert_eq!(
            delivery(2).retry(wait, "r").await.unwrap(),
            Settled::DeadLettered
        );
        assert_eq!(
            delivery(3).retry(wait, "r").await.unwrap(),
            Settled::DeadLettered
        );
        drop(delivery(1));
        assert_eq!(
            *settle.calls.lock().unwrap(),
            ["retry", "dead_letter", "dead_letter", "abandon"]
        );
    }

    #[cfg(any(feature = "amqp", feature = "sqs"))]
    #[test]
    fn a_foreign_token_is_an_error_not_a_panic() {
        #[cfg(feature = "amqp")]
        assert!(matches!(
            Token::Memory(1).into_amqp(),
            Err(QueueError::Unavailable(_))
        ));
        #[cfg(feature = "sqs")]
        assert!(matches!(
            Token::Memory(1).into_sqs(),
            Err(QueueError::Unavailable(_))
        ));
    }
}
