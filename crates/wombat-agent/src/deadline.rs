//! The one deadline policy of an agent request, for `send` and `stream`
//! alike.

use std::pin::Pin;
use std::time::Duration;

use http::StatusCode;
use tokio::time::{Instant, Sleep};

use crate::ApiError;
use crate::host::Settings;

/// How long a reply the LLM has already produced may still spend on its
/// backend write once the request deadline has (nearly) passed. The reply is
/// paid for: a write that needs a moment more is worth it, and the caller
/// gets the reply either way (in the 502 body when the write does not make
/// it), so the response may come up to this much after the deadline.
const WRITE_GRACE: Duration = Duration::from_secs(1);

/// `WOMBAT_REQUEST_TIMEOUT_SECS` counted from the moment the body was read
/// bounds task resolution and every LLM step (504 `deadline_exceeded`).
/// Once the LLM has answered, the deadline no longer cancels anything that
/// would lose the reply: the backend write gets the time left (at least
/// one second) and, if it fails or runs out of time, the reply still
/// reaches the caller. One timer (pinned by the caller, no allocation),
/// reset for the write.
pub struct Deadline<'t> {
    timer: Pin<&'t mut Sleep>,
    total: Duration,
    /// Whether [`Deadline::bound`] gave up on its work.
    exceeded: bool,
}

/// The instant a request that starts now must be done by.
pub fn deadline_at(settings: &Settings) -> Instant {
    Instant::now() + settings.request_timeout
}

impl<'t> Deadline<'t> {
    /// `timer` is `sleep_until(deadline_at(..))`, pinned where the request's
    /// work runs.
    pub fn new(settings: &Settings, timer: Pin<&'t mut Sleep>) -> Self {
        Self {
            timer,
            total: settings.request_timeout,
            exceeded: false,
        }
    }

    /// The instant the request must be done by.
    pub fn at(&self) -> Instant {
        self.timer.deadline()
    }

    /// Whether the deadline cut some work short.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Runs `work` until the deadline; 504 when it fires first (`work` is
    /// dropped, which is safe before the LLM has answered: nothing is paid
    /// for that would be lost).
    ///
    /// `work` comes pinned by the caller: an async fn keeps a by-value
    /// argument in its own state beside the copy it polls, which doubled the
    /// LLM phase in every open stream's task.
    pub(crate) async fn bound<T>(
        &mut self,
        work: Pin<&mut impl Future<Output = Result<T, ApiError>>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            biased;
            result = work => return result,
            () = self.timer.as_mut() => {}
        }
        self.exceeded = true;
        Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!(
                "request did not finish within {}s",
                self.total.as_secs_f64()
            ),
        ))
    }

    /// Runs the backend write of an answered request: until the deadline, or
    /// [`WRITE_GRACE`] from now if that is later. `None` when it ran out of
    /// time; the write may then still land (its idempotency key makes a
    /// retry by anyone who knows the key harmless), but the daemon never
    /// starts another write with a different key.
    pub(crate) async fn write<T>(&mut self, work: Pin<&mut impl Future<Output = T>>) -> Option<T> {
        let at = self.timer.deadline().max(Instant::now() + WRITE_GRACE);
        self.timer.as_mut().reset(at);
        tokio::select! {
            biased;
            result = work => Some(result),
            () = self.timer.as_mut() => None,
        }
    }
}
