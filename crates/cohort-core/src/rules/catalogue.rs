//! The one table of fields and functions the rules language knows.
//!
//! The compiler resolves names through it, error messages list it, and a
//! test checks that `docs/rules.md` mentions every entry, so the three can
//! not drift apart.

use super::facts::{FlagField, NumField, SetField, TextField, TimeField, Window};
use std::fmt;

/// The static type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// A float; counts, sums, ages, affinities.
    Number,
    /// Exact text.
    String,
    /// A condition.
    Bool,
    /// A span of time, from `since(...)` or a literal such as `90d`.
    Duration,
    /// A point in time; usable through `since` or against another instant.
    Instant,
    /// A set of strings, usable on the right of `in`.
    StringSet,
    /// A list literal `["a", "b"]`, only valid on the right of `in`.
    List,
}

impl Type {
    /// The article-carrying name used in messages ("a number").
    pub fn describe(self) -> &'static str {
        match self {
            Type::Number => "a number",
            Type::String => "a string",
            Type::Bool => "a bool",
            Type::Duration => "a duration",
            Type::Instant => "an instant",
            Type::StringSet => "a string set",
            Type::List => "a list",
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Number => "number",
            Type::String => "string",
            Type::Bool => "bool",
            Type::Duration => "duration",
            Type::Instant => "instant",
            Type::StringSet => "string-set",
            Type::List => "list",
        })
    }
}

/// What a field path resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldRef {
    /// Read through [`super::Facts::number`].
    Num(NumField),
    /// `profile.age`: computed by the rules from the birth date (or the
    /// declared age), so its timer agrees with its value.
    Age,
    /// Read through [`super::Facts::instant`].
    Time(TimeField),
    /// Read through [`super::Facts::text`].
    Text(TextField),
    /// Read through [`super::Facts::set_contains`].
    Set(SetField),
    /// Read through [`super::Facts::flag`].
    Flag(FlagField),
}

impl FieldRef {
    /// The field's type.
    pub fn ty(self) -> Type {
        match self {
            FieldRef::Num(_) | FieldRef::Age => Type::Number,
            FieldRef::Time(_) => Type::Instant,
            FieldRef::Text(_) => Type::String,
            FieldRef::Set(_) => Type::StringSet,
            FieldRef::Flag(_) => Type::Bool,
        }
    }
}

/// One row of the field catalogue.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    /// The path written in rules, e.g. `orders.30d`.
    pub path: &'static str,
    /// What the path resolves to.
    pub field: FieldRef,
    /// One line for docs and `cohort validate --list`.
    pub doc: &'static str,
}

macro_rules! windowed {
    ($prefix:literal, $ctor:ident, $doc:literal) => {
        [
            FieldInfo { path: concat!($prefix, ".7d"), field: FieldRef::Num(NumField::$ctor(Window::D7)), doc: $doc },
            FieldInfo { path: concat!($prefix, ".30d"), field: FieldRef::Num(NumField::$ctor(Window::D30)), doc: $doc },
            FieldInfo { path: concat!($prefix, ".90d"), field: FieldRef::Num(NumField::$ctor(Window::D90)), doc: $doc },
            FieldInfo {
                path: concat!($prefix, ".365d"),
                field: FieldRef::Num(NumField::$ctor(Window::D365)),
                doc: $doc,
            },
            FieldInfo {
                path: concat!($prefix, ".lifetime"),
                field: FieldRef::Num(NumField::$ctor(Window::Lifetime)),
                doc: $doc,
            },
        ]
    };
}

const ORDERS: [FieldInfo; 5] = windowed!("orders", Orders, "number of orders in the window");
const SPEND: [FieldInfo; 5] = windowed!("spend", Spend, "sum of order totals in the window");
const PAGE_VIEWS: [FieldInfo; 5] = windowed!("page_views", PageViews, "page views in the window");
const PRODUCT_VIEWS: [FieldInfo; 5] = windowed!("product_views", ProductViews, "product-detail views in the window");
const SESSIONS: [FieldInfo; 5] = windowed!("sessions", Sessions, "sessions started in the window");

const OTHERS: [FieldInfo; 21] = [
    FieldInfo {
        path: "aov",
        field: FieldRef::Num(NumField::Aov),
        doc: "lifetime average order value, 0 without orders",
    },
    FieldInfo { path: "cart.items", field: FieldRef::Num(NumField::CartItems), doc: "items in the cart" },
    FieldInfo { path: "cart.value", field: FieldRef::Num(NumField::CartValue), doc: "value of the cart" },
    FieldInfo {
        path: "cart.last_added",
        field: FieldRef::Time(TimeField::CartLastAdded),
        doc: "when an item was last added to the cart",
    },
    FieldInfo { path: "last_purchase", field: FieldRef::Time(TimeField::LastPurchase), doc: "latest order" },
    FieldInfo { path: "first_purchase", field: FieldRef::Time(TimeField::FirstPurchase), doc: "first order" },
    FieldInfo { path: "first_seen", field: FieldRef::Time(TimeField::FirstSeen), doc: "first event of any kind" },
    FieldInfo { path: "last_seen", field: FieldRef::Time(TimeField::LastSeen), doc: "latest event of any kind" },
    FieldInfo {
        path: "profile.age",
        field: FieldRef::Age,
        doc: "completed years from the birth date at now (UTC), else the declared age",
    },
    FieldInfo { path: "profile.gender", field: FieldRef::Text(TextField::Gender), doc: "as sent in the profile" },
    FieldInfo { path: "profile.income_band", field: FieldRef::Text(TextField::IncomeBand), doc: "as sent" },
    FieldInfo { path: "profile.education", field: FieldRef::Text(TextField::Education), doc: "as sent" },
    FieldInfo { path: "profile.country", field: FieldRef::Text(TextField::Country), doc: "as sent (ISO code)" },
    FieldInfo { path: "profile.region", field: FieldRef::Text(TextField::Region), doc: "as sent" },
    FieldInfo { path: "profile.city", field: FieldRef::Text(TextField::City), doc: "as sent" },
    FieldInfo { path: "profile.loyalty_tier", field: FieldRef::Text(TextField::LoyaltyTier), doc: "as sent" },
    FieldInfo {
        path: "profile.interests",
        field: FieldRef::Set(SetField::Interests),
        doc: "declared interests; test with `\"x\" in profile.interests`",
    },
    FieldInfo { path: "consent.email", field: FieldRef::Flag(FlagField::ConsentEmail), doc: "email consent" },
    FieldInfo { path: "consent.sms", field: FieldRef::Flag(FlagField::ConsentSms), doc: "SMS consent" },
    FieldInfo { path: "consent.push", field: FieldRef::Flag(FlagField::ConsentPush), doc: "push consent" },
    FieldInfo { path: "consent.web", field: FieldRef::Flag(FlagField::ConsentWeb), doc: "web personalisation consent" },
];

/// Every field path, in the order docs and error messages list them.
pub fn fields() -> impl Iterator<Item = &'static FieldInfo> {
    ORDERS
        .iter()
        .chain(SPEND.iter())
        .chain(PAGE_VIEWS.iter())
        .chain(PRODUCT_VIEWS.iter())
        .chain(SESSIONS.iter())
        .chain(OTHERS.iter())
}

/// Look a path up.
pub fn field(path: &str) -> Option<&'static FieldInfo> {
    fields().find(|f| f.path == path)
}

/// The built-in functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `since(instant)`.
    Since,
    /// `affinity("category")`.
    Affinity,
    /// `in_segment("name")`.
    InSegment,
    /// `birthday_within(duration)`.
    BirthdayWithin,
    /// `birthday_this_month()`.
    BirthdayThisMonth,
    /// `offers_sent("offer", duration)`.
    OffersSent,
}

/// One row of the function catalogue.
#[derive(Clone, Copy, Debug)]
pub struct FuncInfo {
    /// The name as written in conditions.
    pub name: &'static str,
    /// Which function it is.
    pub func: Func,
    /// Argument types; string and duration arguments must be literals.
    pub params: &'static [Type],
    /// Result type.
    pub returns: Type,
    /// The signature as shown in docs and messages.
    pub signature: &'static str,
    /// One line for docs.
    pub doc: &'static str,
}

/// Every function.
pub const FUNCTIONS: [FuncInfo; 6] = [
    FuncInfo {
        name: "since",
        func: Func::Since,
        params: &[Type::Instant],
        returns: Type::Duration,
        signature: "since(instant) -> duration",
        doc: "time from the instant to now; a comparison with a missing instant is false",
    },
    FuncInfo {
        name: "affinity",
        func: Func::Affinity,
        params: &[Type::String],
        returns: Type::Number,
        signature: "affinity(\"category\") -> number",
        doc: "decayed category affinity in [0, 1] (half-life: settings.affinity_half_life)",
    },
    FuncInfo {
        name: "in_segment",
        func: Func::InSegment,
        params: &[Type::String],
        returns: Type::Bool,
        signature: "in_segment(\"name\") -> bool",
        doc: "membership of another segment (after its group is resolved)",
    },
    FuncInfo {
        name: "birthday_within",
        func: Func::BirthdayWithin,
        params: &[Type::Duration],
        returns: Type::Bool,
        signature: "birthday_within(duration) -> bool",
        doc: "a birthday (whole UTC day) overlaps [now, now + duration]; at most 366d",
    },
    FuncInfo {
        name: "birthday_this_month",
        func: Func::BirthdayThisMonth,
        params: &[],
        returns: Type::Bool,
        signature: "birthday_this_month() -> bool",
        doc: "now (UTC) is in the birth month",
    },
    FuncInfo {
        name: "offers_sent",
        func: Func::OffersSent,
        params: &[Type::String, Type::Duration],
        returns: Type::Number,
        signature: "offers_sent(\"offer_id\", duration) -> number",
        doc: "sends of that offer in the last duration",
    },
];

/// Look a function up.
pub fn function(name: &str) -> Option<&'static FuncInfo> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Comma-separated field paths, for "expected one of" messages.
pub fn field_list() -> String {
    fields().map(|f| f.path).collect::<Vec<_>>().join(", ")
}

/// Comma-separated function names.
pub fn function_list() -> String {
    FUNCTIONS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// The closest candidate by edit distance, if it is close enough to be a
/// plausible typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| *d <= 2.max(c.len() / 4)).map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_resolve() {
        let all: Vec<_> = fields().map(|f| f.path).collect();
        let mut dedup = all.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(all.len(), dedup.len());
        assert_eq!(all.len(), 46);
        assert!(field("true").is_none());
        assert_eq!(field("orders.30d").map(|f| f.field), Some(FieldRef::Num(NumField::Orders(Window::D30))));
        assert_eq!(closest("order.30d", fields().map(|f| f.path)), Some("orders.30d"));
        assert_eq!(closest("zzzzzz", fields().map(|f| f.path)), None);
    }
}
