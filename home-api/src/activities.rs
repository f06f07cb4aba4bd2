//! The endpoints of the example: the home activities feed, and the
//! caller's private activities.
//!
//! The handlers are identical in every auth mode: they take
//! `Option<VerifiedClaims>` or `VerifiedClaims`, which a layer filled in (or
//! did not), and never look at a header. The private list needs a
//! multi-factor sign-in; that rule sits on the route in [`crate::app`]
//! (`RequireAuthn::mfa()`), not in the handler.

use std::borrow::Cow;

use auth_layer::{Claims, VerifiedClaims};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Who may see an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone, signed in or not.
    Public,
    /// Only the signed-in caller it belongs to.
    Private,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Stable identifier.
    pub id: Cow<'static, str>,
    /// What it is.
    pub title: Cow<'static, str>,
    /// Who may see it.
    pub visibility: Visibility,
}

/// The answer of `GET /api/activities/home`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFeed {
    /// Public activities, then the caller's private one if signed in.
    pub activities: Vec<Activity>,
    /// The caller's DID (`sub`), when signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

const fn public(id: &'static str, title: &'static str) -> Activity {
    Activity {
        id: Cow::Borrowed(id),
        title: Cow::Borrowed(title),
        visibility: Visibility::Public,
    }
}

/// What everyone sees.
const PUBLIC_ACTIVITIES: [Activity; 3] = [
    public("park-run", "Saturday park run, 9:00 at the north gate"),
    public("book-club", "Book club: The Dispossessed, Thursday 19:00"),
    public(
        "repair-cafe",
        "Repair café at the library, Sunday afternoon",
    ),
];

/// Private plans; each user gets one, picked from their DID.
const PRIVATE_PLANS: [&str; 4] = [
    "Your plan: water the tomatoes before 8",
    "Your plan: call grandma after lunch",
    "Your plan: return the neighbour's ladder",
    "Your plan: piano practice, 30 minutes",
];

/// The private activity of `sub` (deterministic, so a user sees the same one
/// on every call).
fn private_activity(sub: &str) -> Activity {
    let pick = sub
        .bytes()
        .fold(0usize, |acc, b| acc.wrapping_add(usize::from(b)));
    Activity {
        id: Cow::Borrowed("my-plan"),
        title: Cow::Borrowed(PRIVATE_PLANS[pick % PRIVATE_PLANS.len()]),
        visibility: Visibility::Private,
    }
}

/// The feed for a caller, signed in or not.
pub fn feed_for(claims: Option<&Claims>) -> HomeFeed {
    let mut activities = PUBLIC_ACTIVITIES.to_vec();
    let user = claims.map(|c| {
        activities.push(private_activity(&c.sub));
        c.sub.clone()
    });
    HomeFeed { activities, user }
}

/// The answer of `GET /api/activities/private`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateFeed {
    /// The caller's DID (`sub`).
    pub user: String,
    /// Only the caller's private activities.
    pub activities: Vec<Activity>,
}

/// Private notes worth a second factor; each user gets one, picked like the
/// plan.
const PRIVATE_NOTES: [&str; 4] = [
    "Spare key: under the blue flowerpot",
    "Alarm code change due on the 1st",
    "Bank appointment moved to Friday 10:00",
    "Parcel pick-up PIN is in the kitchen drawer",
];

/// The private activities of `sub`: the plan the home feed shows, and a note
/// that only a multi-factor sign-in may see.
pub fn private_for(sub: &str) -> PrivateFeed {
    let pick = sub
        .bytes()
        .fold(0usize, |acc, b| acc.wrapping_add(usize::from(b)));
    PrivateFeed {
        user: sub.to_owned(),
        activities: vec![
            private_activity(sub),
            Activity {
                id: Cow::Borrowed("my-note"),
                title: Cow::Borrowed(PRIVATE_NOTES[pick % PRIVATE_NOTES.len()]),
                visibility: Visibility::Private,
            },
        ],
    }
}

/// `GET /api/activities/private`: behind `RequireAuthn::mfa()`, so the
/// claims here are always of a multi-factor login.
pub async fn private(claims: VerifiedClaims) -> Json<PrivateFeed> {
    Json(private_for(&claims.sub))
}

/// `GET /api/activities/home`.
pub async fn home(claims: Option<VerifiedClaims>) -> Json<HomeFeed> {
    Json(feed_for(claims.as_deref()))
}
