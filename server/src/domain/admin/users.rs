//! Console users and their sign-ins.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::{Admin, AdminError, Change, Result, invalid};
use crate::domain::console_users::{self, UserError};
use crate::model::{Actor, ConsoleUser, Role};
use crate::store::StoreError;

impl From<UserError> for AdminError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(m) => AdminError::Invalid(m),
            UserError::Store(e) => AdminError::Store(e),
        }
    }
}

fn target(username: &str) -> String {
    format!("user/{username}")
}

/// The password hash never goes into the trail.
fn role_of(role: Role) -> serde_json::Value {
    json!({"role": role.as_str()})
}

/// How a console sign-in ended.
#[derive(Debug)]
pub enum SignIn {
    Accepted(ConsoleUser),
    Refused,
    /// Too many recent failures for the account or the address; try again after this long.
    Locked(Duration),
}

impl Admin {
    /// Creates a user or replaces its password and role.
    pub async fn put_user(
        &self,
        actor: &Actor,
        username: &str,
        password: &str,
        role: Role,
    ) -> Result<ConsoleUser> {
        let before = self.store.get_user(username).await?;
        let user = console_users::put_user(self.store(), username, password, role).await?;
        let action = match before {
            Some(_) => "user.update",
            None => "user.create",
        };
        let change = Change::new(action, target(&user.username))
            .before(before.map(|b| role_of(b.role)))
            .after(Some(role_of(user.role)));
        self.audit(actor, change).await;
        Ok(user)
    }

    /// Disables or re-enables a user; nobody can lock themselves out of the console.
    pub async fn set_user_disabled(
        &self,
        actor: &Actor,
        username: &str,
        disabled: bool,
    ) -> Result<ConsoleUser> {
        let own = actor
            .console_user()
            .is_some_and(|me| me.eq_ignore_ascii_case(username));
        if disabled && own {
            return invalid("you cannot disable your own account");
        }
        let user = console_users::set_disabled(self.store(), username, disabled).await?;
        let action = match disabled {
            true => "user.disable",
            false => "user.enable",
        };
        self.audit(actor, Change::new(action, target(&user.username)))
            .await;
        Ok(user)
    }

    /// Checks console credentials; every attempt, refused or not, is in the trail. `typed` is
    /// whatever name was entered: only a bounded, printable prefix of it is kept. An account or an
    /// address with too many recent failures is refused without a password check.
    pub async fn sign_in(
        &self,
        typed: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<SignIn, StoreError> {
        let printable: String = typed.chars().filter(|c| !c.is_control()).take(64).collect();
        if let Some(left) = self.sign_ins.locked(typed, address) {
            let change = Change::new("login.locked", "console")
                .after(Some(json!({"retryAfterSecs": left.as_secs().max(1)})));
            self.audit(&Actor::console(&printable), change).await;
            return Ok(SignIn::Locked(left));
        }
        let user = console_users::authenticate(self.store(), typed, password).await?;
        let (name, action) = match &user {
            Some(user) => {
                self.sign_ins.succeeded(typed);
                (user.username.clone(), "login")
            }
            None => {
                self.sign_ins.failed(typed, address);
                (printable, "login.failed")
            }
        };
        self.audit(&Actor::console(&name), Change::new(action, "console"))
            .await;
        Ok(user.map_or(SignIn::Refused, SignIn::Accepted))
    }

    pub async fn signed_out(&self, username: &str) {
        let actor = Actor::console(username);
        self.audit(&actor, Change::new("logout", "console")).await;
    }
}
