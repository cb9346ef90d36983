//! The audit log: security events with time, application, user, client address and dialect.
//! An event is recorded in the transaction of the operation it records (`audit_in`), or, for
//! events with no write of their own (a failed sign-in), on its own (`Core::audit`), where a
//! failure to write is logged instead.

use super::guard::Caller;
use super::{now_ms, Core, Error, User};
use crate::store::audit::{self, AuditRow};

/// A security event as the audit listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix ms.
    pub at: i64,
    pub event: String,
    pub app_id: Option<String>,
    pub user_id: Option<i64>,
    pub login: Option<String>,
    pub client: Option<String>,
    pub dialect: Option<String>,
}

impl From<AuditRow> for Event {
    fn from(r: AuditRow) -> Event {
        Event {
            at: r.at,
            event: r.event,
            app_id: r.app_id,
            user_id: r.user_id,
            login: r.login,
            client: r.client,
            dialect: r.dialect,
        }
    }
}

impl Core {
    /// Records one event on its own. `who` is the user when known, else the login as given.
    pub(crate) fn audit(
        &self,
        caller: &Caller,
        event: &str,
        app_id: Option<&str>,
        user: Option<&User>,
        login: Option<&str>,
    ) {
        if let Err(e) = self.store.write(|tx| audit_in(tx, caller, event, app_id, user, login)) {
            log::error!("audit: event {event} not recorded: {e}");
        }
    }

    /// Events since `since` (Unix ms), of one login (as typed, cleaned like every login) when given.
    pub fn audit_events(&self, since: i64, login: Option<&str>) -> Result<Vec<Event>, Error> {
        let login = login.map(|l| super::text::clean("user", l)).transpose()?;
        let rows = self.store.with(|c| audit::list(c, since, login.as_deref()))?;
        Ok(rows.into_iter().map(Event::from).collect())
    }
}

/// Records one event in the write `tx` of the operation it records: committed with it, or not at all.
pub(crate) fn audit_in(
    tx: &crate::store::Db,
    caller: &Caller,
    event: &str,
    app_id: Option<&str>,
    user: Option<&User>,
    login: Option<&str>,
) -> Result<(), Error> {
    let row = AuditRow {
        at: now_ms(),
        event: event.to_string(),
        app_id: app_id.map(str::to_string),
        user_id: user.map(|u| u.id),
        login: user.map(|u| u.login.clone()).or_else(|| login.map(str::to_string)),
        client: caller.addr.map(|a| a.to_string()),
        dialect: Some(caller.dialect.to_string()),
    };
    Ok(audit::insert(tx, &row)?)
}
