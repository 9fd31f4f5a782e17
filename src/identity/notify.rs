//! Sending codes: SMTP for email, an HTTP webhook for SMS, and the outbox file of API.md for
//! whatever has no gateway configured.
//!
//! Gateways are sent to in the background: the answer to `POST /v1/codes` (`202 Accepted`)
//! must not wait on, or vary with, a mail server. The outbox is written before the answer, so
//! that a test or a developer reading it right after the `202` finds the line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::codes::Purpose;
use super::error::{IdentityError, Result};
use super::identifiers::{Identifier, Kind};
use super::settings::{NotifierConfig, SmtpConfig, SmtpTls, WebhookConfig};

pub struct Message {
    pub to: Identifier,
    pub purpose: Purpose,
    pub code: String,
    pub at: OffsetDateTime,
    pub valid_minutes: u64,
}

impl Message {
    fn subject(&self) -> &'static str {
        match self.purpose {
            Purpose::Register => "Your cairn sign-up code",
            Purpose::ResetPassword => "Your cairn password reset code",
            Purpose::ChangeDetails => "Confirm a change to your cairn account",
            Purpose::DeleteAccount => "Confirm deleting your cairn account",
        }
    }

    /// Short lines, so that the mail goes out as 7-bit text with the code on one line.
    fn text(&self) -> String {
        format!(
            "Your cairn code is {}.\nIt is valid for {} minutes.\n\nIf you did not ask for it, ignore this message:\nnothing changes without the code.\n",
            self.code, self.valid_minutes
        )
    }

    fn at_rfc3339(&self) -> String {
        self.at.format(&Rfc3339).unwrap_or_default()
    }
}

/// One way of delivering a message.
pub trait Deliver: Send + Sync {
    fn deliver<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Result<(), String>>;
    /// Whether to send after answering the request rather than before.
    fn in_background(&self) -> bool;
}

#[derive(Clone)]
pub struct Notifier {
    email: Arc<dyn Deliver>,
    sms: Arc<dyn Deliver>,
}

impl Notifier {
    pub fn from_config(c: &NotifierConfig, data_dir: &std::path::Path) -> Result<Self> {
        let outbox: Arc<dyn Deliver> =
            Arc::new(Outbox::new(c.outbox.clone().unwrap_or_else(|| data_dir.join("outbox.jsonl"))));
        let email: Arc<dyn Deliver> = match &c.smtp {
            Some(s) => Arc::new(Smtp::new(s)?),
            None => outbox.clone(),
        };
        let sms: Arc<dyn Deliver> = match &c.webhook {
            Some(w) => Arc::new(Webhook::new(w)?),
            None => outbox,
        };
        Ok(Notifier { email, sms })
    }

    /// Hand the message to its channel. Failures of background channels are logged; the
    /// user asks for a new code if none arrives.
    pub async fn send(&self, msg: Message) -> Result<()> {
        let channel = match msg.to.kind() {
            Kind::Email => self.email.clone(),
            Kind::Phone => self.sms.clone(),
        };
        if channel.in_background() {
            tokio::spawn(async move {
                if let Err(e) = channel.deliver(&msg).await {
                    tracing::warn!(error = %e, purpose = msg.purpose.as_str(), "a code could not be delivered");
                }
            });
            Ok(())
        } else {
            channel.deliver(&msg).await.map_err(IdentityError::Internal)
        }
    }
}

/// `DATA_DIR/outbox.jsonl`: one JSON line per message.
pub struct Outbox {
    path: PathBuf,
    /// std Mutex: held on a blocking thread for one append, never across an `.await`.
    lock: Arc<Mutex<()>>,
}

impl Outbox {
    pub fn new(path: PathBuf) -> Self {
        Outbox { path, lock: Arc::new(Mutex::new(())) }
    }
}

impl Deliver for Outbox {
    fn deliver<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Result<(), String>> {
        let line = json!({
            "to": msg.to.as_str(),
            "purpose": msg.purpose.as_str(),
            "code": msg.code,
            "at": msg.at_rfc3339(),
        })
        .to_string();
        let path = self.path.clone();
        let lock = self.lock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _held = lock.lock().expect("outbox lock poisoned");
                let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                f.write_all(format!("{line}\n").as_bytes())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("appending to the outbox: {e}"))
        })
    }

    fn in_background(&self) -> bool {
        false
    }
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    pub fn new(c: &SmtpConfig) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| IdentityError::Internal(format!("notifier.smtp: {e}"));
        let from: Mailbox = c.from.parse().map_err(|e| bad(&e))?;
        let (builder, default_port) = match c.tls {
            SmtpTls::None => (AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host), 25),
            SmtpTls::Starttls => {
                (AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(|e| bad(&e))?, 587)
            }
            SmtpTls::Tls => (AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(|e| bad(&e))?, 465),
        };
        let mut builder =
            builder.port(c.port.unwrap_or(default_port)).timeout(Some(Duration::from_secs(c.timeout_secs)));
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Smtp { transport: builder.build(), from })
    }
}

impl Deliver for Smtp {
    fn deliver<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let to: Mailbox = msg.to.as_str().parse().map_err(|e| format!("recipient: {e}"))?;
            let mail = lettre::Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(msg.subject())
                .header(ContentType::TEXT_PLAIN)
                .body(msg.text())
                .map_err(|e| format!("building the mail: {e}"))?;
            self.transport.send(mail).await.map(drop).map_err(|e| format!("smtp: {e}"))
        })
    }

    fn in_background(&self) -> bool {
        true
    }
}

pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    bearer: Option<String>,
}

impl Webhook {
    pub fn new(c: &WebhookConfig) -> Result<Self> {
        let url = c.url.parse().map_err(|e| IdentityError::Internal(format!("notifier.webhook.url: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(c.timeout_secs))
            .build()
            .map_err(|e| IdentityError::Internal(format!("notifier.webhook: {e}")))?;
        Ok(Webhook { client, url, bearer: c.bearer_token.clone() })
    }
}

impl Deliver for Webhook {
    fn deliver<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = json!({
                "to": msg.to.as_str(),
                "purpose": msg.purpose.as_str(),
                "code": msg.code,
                "at": msg.at_rfc3339(),
                "text": msg.text(),
            });
            let mut req = self.client.post(self.url.clone()).json(&body);
            if let Some(t) = &self.bearer {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| format!("webhook: {e}"))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("webhook answered {}", resp.status()))
            }
        })
    }

    fn in_background(&self) -> bool {
        true
    }
}
