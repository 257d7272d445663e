//! From the YAML tree to a [`RuleSet`]: schema checks, name resolution,
//! groups, dependency order, and expression compilation, each failure a
//! [`RulesError`] at the right line and column.

use super::compile::{self, Expr, Scope};
use super::eval::Membership;
use super::parse;
use super::program::{Cond, Plan};
use super::segset::{SegmentSet, MAX_SEGMENTS};
use super::yaml::{self, Locator, Node, Pos, Scalar};
use super::{Cap, Channel, Offer, Prior, RuleSet, RulesError, Segment, Settings, Trigger};
use crate::time::Duration;
use std::collections::HashMap;

const TOP_KEYS: &[&str] = &["version", "settings", "segments", "offers"];
const SETTINGS_KEYS: &[&str] = &["affinity_half_life", "session_gap"];
const SEGMENT_KEYS: &[&str] = &["name", "description", "group", "priority", "when"];
const OFFER_KEYS: &[&str] =
    &["id", "description", "eligible", "value", "lever", "channels", "cap", "cooldown", "holdout", "prior", "triggers"];
const CAP_KEYS: &[&str] = &["max", "per"];
const PRIOR_KEYS: &[&str] = &["alpha", "beta"];

/// The rules file format version this build understands.
pub const SUPPORTED_VERSION: u32 = 1;

struct Ctx<'a> {
    file: &'a str,
    locator: Locator,
}

impl Ctx<'_> {
    fn at(&self, pos: Pos, message: impl Into<String>) -> RulesError {
        RulesError::new(self.file, pos.line, pos.column, message)
    }

    fn in_scalar(&self, s: &Scalar, offset: usize, message: impl Into<String>) -> RulesError {
        let (line, column) = self.locator.locate(s, offset);
        RulesError::new(self.file, line, column, message)
    }
}

/// A mapping's entries, checked against the keys it may have.
struct Map<'n> {
    entries: &'n [(Scalar, Node)],
    pos: Pos,
}

impl<'n> Map<'n> {
    fn new(ctx: &Ctx<'_>, node: &'n Node, what: &str, allowed: &[&str]) -> Result<Map<'n>, RulesError> {
        let Node::Map(entries, pos) = node else {
            return Err(ctx.at(node.pos(), format!("expected {what} (a mapping of keys), found {}", node.describe())));
        };
        for (i, (k, _)) in entries.iter().enumerate() {
            if !allowed.contains(&k.value.as_str()) {
                return Err(ctx.at(
                    k.pos,
                    format!("unknown key `{}` in {what}; expected one of {}", k.value, allowed.join(", ")),
                ));
            }
            if let Some((first, _)) = entries[..i].iter().find(|(f, _)| f.value == k.value) {
                return Err(
                    ctx.at(k.pos, format!("duplicate key `{}` in {what} (first at line {})", k.value, first.pos.line))
                );
            }
        }
        Ok(Map { entries, pos: *pos })
    }

    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }

    fn required(&self, ctx: &Ctx<'_>, key: &str, what: &str) -> Result<&'n Node, RulesError> {
        self.get(key).ok_or_else(|| ctx.at(self.pos, format!("{what} is missing the required key `{key}`")))
    }
}

fn scalar<'n>(ctx: &Ctx<'_>, node: &'n Node, key: &str, expected: &str) -> Result<&'n Scalar, RulesError> {
    match node {
        Node::Scalar(s) => Ok(s),
        other => Err(ctx.at(other.pos(), format!("expected {expected} for `{key}`, found {}", other.describe()))),
    }
}

fn plain_text(ctx: &Ctx<'_>, node: &Node, key: &str) -> Result<String, RulesError> {
    Ok(scalar(ctx, node, key, "text")?.value.clone())
}

fn name(ctx: &Ctx<'_>, node: &Node, key: &str) -> Result<String, RulesError> {
    let s = scalar(ctx, node, key, "a name")?;
    let ok = !s.value.is_empty()
        && s.value.len() <= 64
        && s.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ctx.at(
            s.pos,
            format!("bad {key} `{}`; expected 1 to 64 characters from a-z, A-Z, 0-9, `_` and `-`", s.value),
        ));
    }
    Ok(s.value.clone())
}

fn number(ctx: &Ctx<'_>, node: &Node, key: &str) -> Result<f64, RulesError> {
    let s = scalar(ctx, node, key, "a number")?;
    match s.value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ctx.at(s.pos, format!("expected a number for `{key}`, found `{}`", s.value))),
    }
}

fn integer<T: std::str::FromStr>(ctx: &Ctx<'_>, node: &Node, key: &str) -> Result<T, RulesError> {
    let s = scalar(ctx, node, key, "a whole number")?;
    s.value
        .trim()
        .parse::<T>()
        .map_err(|_| ctx.at(s.pos, format!("expected a whole number for `{key}`, found `{}`", s.value)))
}

fn duration(ctx: &Ctx<'_>, node: &Node, key: &str) -> Result<Duration, RulesError> {
    let s = scalar(ctx, node, key, "a duration")?;
    match parse::duration_literal(s.value.trim()) {
        Some(d) if d > Duration::ZERO => Ok(d),
        _ => Err(ctx.at(
            s.pos,
            format!(
                "bad duration `{}` for `{key}`; expected a whole number above 0 followed by a unit: \
                 ms, s, m, h, d or w (e.g. 30m, 90d)",
                s.value
            ),
        )),
    }
}

fn list<'n>(ctx: &Ctx<'_>, node: &'n Node, key: &str) -> Result<&'n [Node], RulesError> {
    match node {
        Node::Seq(items, _) => Ok(items),
        // `segments:` with nothing after it, or `~` / `null`: an empty list.
        Node::Scalar(s) if !s.quoted && matches!(s.value.as_str(), "" | "~" | "null") => Ok(&[]),
        other => Err(ctx.at(other.pos(), format!("expected a list for `{key}`, found {}", other.describe()))),
    }
}

struct RawSegment<'n> {
    seg: Segment,
    name_pos: Pos,
    group_pos: Option<Pos>,
    when: &'n Scalar,
}

struct RawOffer<'n> {
    offer: Offer,
    eligible: &'n Scalar,
    triggers: Vec<&'n Scalar>,
}

/// Compile one condition, with errors placed in the file.
fn condition(ctx: &Ctx<'_>, s: &Scalar, scope: &Scope<'_>) -> Result<compile::Compiled, RulesError> {
    let node = parse::parse_expr(&s.value).map_err(|e| ctx.in_scalar(s, e.offset, e.message))?;
    compile::compile(&s.value, &node, scope).map_err(|e| ctx.in_scalar(s, e.offset, e.message))
}

pub fn load(file: &str, text: &str) -> Result<RuleSet, RulesError> {
    let ctx = Ctx { file, locator: Locator::new(text) };
    let root = yaml::parse(text).map_err(|e| ctx.at(e.pos, format!("{}{}", e.message, quoting_hint(text, e.pos))))?;
    let top = Map::new(&ctx, &root, "the rules file", TOP_KEYS)?;

    // version
    let vnode = top.required(&ctx, "version", "the rules file")?;
    let vs = scalar(&ctx, vnode, "version", "a version number")?;
    let version: u32 = match vs.value.trim().parse() {
        Ok(v) if v == SUPPORTED_VERSION => v,
        _ => {
            return Err(
                ctx.at(vs.pos, format!("unsupported rules version `{}`; expected {SUPPORTED_VERSION}", vs.value))
            )
        }
    };

    // settings
    let mut settings = Settings::default();
    if let Some(node) = top.get("settings") {
        let m = Map::new(&ctx, node, "settings", SETTINGS_KEYS)?;
        if let Some(n) = m.get("affinity_half_life") {
            settings.affinity_half_life = duration(&ctx, n, "affinity_half_life")?;
        }
        if let Some(n) = m.get("session_gap") {
            settings.session_gap = duration(&ctx, n, "session_gap")?;
        }
    }

    // segments, first pass: names and attributes
    let mut raw_segments: Vec<RawSegment<'_>> = Vec::new();
    let mut seg_index: HashMap<String, u16> = HashMap::new();
    if let Some(node) = top.get("segments") {
        let items = list(&ctx, node, "segments")?;
        if items.len() > MAX_SEGMENTS {
            return Err(ctx.at(
                items[MAX_SEGMENTS].pos(),
                format!("too many segments ({}); at most {MAX_SEGMENTS}", items.len()),
            ));
        }
        for item in items {
            let m = Map::new(&ctx, item, "a segment", SEGMENT_KEYS)?;
            let name_node = m.required(&ctx, "name", "a segment")?;
            let seg_name = name(&ctx, name_node, "name")?;
            if let Some(&prev) = seg_index.get(&seg_name) {
                let first = raw_segments[usize::from(prev)].name_pos;
                return Err(ctx.at(
                    name_node.pos(),
                    format!("duplicate segment name `{seg_name}` (first defined at line {})", first.line),
                ));
            }
            let when_node = m.required(&ctx, "when", &format!("segment `{seg_name}`"))?;
            let when = scalar(&ctx, when_node, "when", "a condition")?;
            let group = m.get("group").map(|n| name(&ctx, n, "group")).transpose()?;
            let priority = m.get("priority").map(|n| integer::<i64>(&ctx, n, "priority")).transpose()?;
            if let (None, Some(p)) = (&group, m.get("priority")) {
                return Err(ctx.at(p.pos(), "`priority` only applies to a segment with a `group`"));
            }
            if let (Some(_), None) = (&group, priority) {
                return Err(ctx.at(
                    m.pos,
                    format!("segment `{seg_name}` has a `group` but no `priority` (lowest number wins the group)"),
                ));
            }
            let description = m.get("description").map(|n| plain_text(&ctx, n, "description")).transpose()?;
            let idx = raw_segments.len() as u16;
            seg_index.insert(seg_name.clone(), idx);
            raw_segments.push(RawSegment {
                seg: Segment {
                    name: seg_name,
                    description,
                    group,
                    priority,
                    when: when.value.clone(),
                    depends_on: SegmentSet::new(),
                    time_dependent: false,
                },
                name_pos: name_node.pos(),
                group_pos: m.get("group").map(Node::pos),
                when,
            });
        }
    }

    // offers, first pass: ids and attributes
    let mut raw_offers: Vec<RawOffer<'_>> = Vec::new();
    if let Some(node) = top.get("offers") {
        for item in list(&ctx, node, "offers")? {
            raw_offers.push(offer_attributes(&ctx, item, &raw_offers)?);
        }
    }
    let offer_ids: Vec<String> = raw_offers.iter().map(|o| o.offer.id.clone()).collect();
    let scope = Scope { segments: &seg_index, offers: &offer_ids };

    // groups: members ordered by priority, then file order
    let mut group_ids: HashMap<&str, u16> = HashMap::new();
    let mut membership = Membership { group_of: vec![None; raw_segments.len()], groups: Vec::new() };
    let mut group_members: Vec<Vec<u16>> = Vec::new();
    for (i, rs) in raw_segments.iter().enumerate() {
        if let Some(g) = rs.seg.group.as_deref() {
            let next = group_ids.len() as u16;
            let gid = *group_ids.entry(g).or_insert(next);
            if usize::from(gid) == group_members.len() {
                group_members.push(Vec::new());
            }
            for &other in &group_members[usize::from(gid)] {
                let o = &raw_segments[usize::from(other)].seg;
                if o.priority == rs.seg.priority {
                    return Err(ctx.at(
                        rs.group_pos.unwrap_or(rs.name_pos),
                        format!(
                            "segments `{}` and `{}` in group `{g}` have the same priority {}; priorities in a \
                             group must differ",
                            o.name,
                            rs.seg.name,
                            rs.seg.priority.unwrap_or_default()
                        ),
                    ));
                }
            }
            group_members[usize::from(gid)].push(i as u16);
            membership.group_of[i] = Some(gid);
        }
    }
    for mut members in group_members {
        members.sort_by_key(|&s| (raw_segments[usize::from(s)].seg.priority, s));
        membership.groups.push(members.into_boxed_slice());
    }

    // segment conditions and the dependency graph
    let mut seg_exprs: Vec<Expr> = Vec::with_capacity(raw_segments.len());
    // edges[i]: (target, offset of the reference in i's condition, referenced segment)
    let mut edges: Vec<Vec<(u16, usize, u16)>> = Vec::with_capacity(raw_segments.len());
    let mut windows = 0u32;
    for (i, rs) in raw_segments.iter_mut().enumerate() {
        let compiled = condition(&ctx, rs.when, &scope)?;
        windows |= compiled.windows;
        let mut out = Vec::new();
        for (target, span) in &compiled.refs {
            rs.seg.depends_on.insert(usize::from(*target));
            match membership.group_of[usize::from(*target)] {
                None => out.push((*target, span.start, *target)),
                Some(g) => {
                    if membership.group_of[i] == Some(g) {
                        return Err(ctx.in_scalar(
                            rs.when,
                            span.start,
                            format!(
                                "`{}` refers to a segment of its own group `{}`; a group's membership depends \
                                 on all its members, so this is a cycle",
                                rs.seg.name,
                                rs.seg.group.as_deref().unwrap_or_default()
                            ),
                        ));
                    }
                    for &member in membership.groups[usize::from(g)].iter() {
                        out.push((member, span.start, *target));
                    }
                }
            }
        }
        rs.seg.time_dependent = compiled.expr.depends_on_time();
        seg_exprs.push(compiled.expr);
        edges.push(out);
    }
    let order = topological_order(&ctx, &raw_segments, &edges)?;

    // offer conditions
    let mut offers = Vec::with_capacity(raw_offers.len());
    let mut offer_exprs = Vec::with_capacity(raw_offers.len());
    for ro in raw_offers {
        let compiled = condition(&ctx, ro.eligible, &scope)?;
        windows |= compiled.windows;
        let mut offer = ro.offer;
        for (target, _) in &compiled.refs {
            offer.segments.insert(usize::from(*target));
        }
        offer.triggers = triggers(&ctx, &ro.triggers, &offer.segments, &seg_index, raw_segments.len())?;
        offers.push(offer);
        offer_exprs.push(compiled.expr);
    }

    let seg_timed: Vec<bool> = raw_segments.iter().map(|r| r.seg.time_dependent).collect();
    let offer_timed = offer_exprs.iter().map(Expr::depends_on_time).collect();
    let offer_own_timed =
        offer_exprs.iter().enumerate().filter(|(_, e)| e.depends_on_own_time()).map(|(i, _)| i).collect();
    let seg_plan = Plan::new(&seg_exprs, &order, &seg_timed);
    Ok(RuleSet {
        windows,
        seg_timed,
        offer_timed,
        offer_own_timed,
        version,
        version_string: format!("{version}-{:016x}", fnv1a(text.as_bytes())),
        settings,
        segments: raw_segments.into_iter().map(|r| r.seg).collect(),
        seg_conds: seg_exprs.iter().map(Cond::new).collect(),
        seg_plan,
        seg_exprs,
        order,
        membership,
        offers,
        offer_conds: offer_exprs.iter().map(Cond::new).collect(),
        offer_exprs,
    })
}

fn offer_attributes<'n>(ctx: &Ctx<'_>, item: &'n Node, earlier: &[RawOffer<'_>]) -> Result<RawOffer<'n>, RulesError> {
    let m = Map::new(ctx, item, "an offer", OFFER_KEYS)?;
    let id_node = m.required(ctx, "id", "an offer")?;
    let id = name(ctx, id_node, "id")?;
    if earlier.iter().any(|o| o.offer.id == id) {
        return Err(ctx.at(id_node.pos(), format!("duplicate offer id `{id}`")));
    }
    let what = format!("offer `{id}`");
    let eligible = scalar(ctx, m.required(ctx, "eligible", &what)?, "eligible", "a condition")?;
    let value = m.get("value").map(|n| number(ctx, n, "value")).transpose()?.unwrap_or(1.0);
    let lever = m.get("lever").map(|n| number(ctx, n, "lever")).transpose()?.unwrap_or(1.0);
    for (key, v) in [("value", value), ("lever", lever)] {
        if v < 0.0 {
            let pos = m.get(key).map_or(m.pos, Node::pos);
            return Err(ctx.at(pos, format!("`{key}` must be 0 or more, found {v}")));
        }
    }
    let channels_node = m.required(ctx, "channels", &what)?;
    let mut channels = Vec::new();
    for c in list(ctx, channels_node, "channels")? {
        let s = scalar(ctx, c, "channels", "a channel")?;
        let Some(ch) = Channel::ALL.iter().copied().find(|ch| ch.as_str() == s.value) else {
            return Err(ctx.at(s.pos, format!("unknown channel `{}`; expected one of email, sms, push, web", s.value)));
        };
        if channels.contains(&ch) {
            return Err(ctx.at(s.pos, format!("channel `{}` is listed twice", s.value)));
        }
        channels.push(ch);
    }
    if channels.is_empty() {
        return Err(ctx.at(channels_node.pos(), "`channels` needs at least one of email, sms, push, web"));
    }
    let cap = match m.get("cap") {
        None => None,
        Some(n) => {
            let cm = Map::new(ctx, n, "`cap`", CAP_KEYS)?;
            let max: u32 = integer(ctx, cm.required(ctx, "max", "`cap`")?, "max")?;
            let per = duration(ctx, cm.required(ctx, "per", "`cap`")?, "per")?;
            Some(Cap { max, per })
        }
    };
    let cooldown = m.get("cooldown").map(|n| duration(ctx, n, "cooldown")).transpose()?;
    let holdout = match m.get("holdout") {
        None => 0.0,
        Some(n) => {
            let h = number(ctx, n, "holdout")?;
            if !(0.0..1.0).contains(&h) {
                return Err(ctx.at(n.pos(), format!("`holdout` is a share: expected 0 <= holdout < 1, found {h}")));
            }
            h
        }
    };
    let prior = match m.get("prior") {
        None => Prior::default(),
        Some(n) => {
            let pm = Map::new(ctx, n, "`prior`", PRIOR_KEYS)?;
            let mut prior = Prior::default();
            for (key, slot) in [("alpha", &mut prior.alpha), ("beta", &mut prior.beta)] {
                if let Some(v) = pm.get(key) {
                    let x = number(ctx, v, key)?;
                    if x <= 0.0 {
                        return Err(ctx.at(v.pos(), format!("`{key}` of a Beta prior must be above 0, found {x}")));
                    }
                    *slot = x;
                }
            }
            prior
        }
    };
    let mut trigger_scalars = Vec::new();
    if let Some(n) = m.get("triggers") {
        for t in list(ctx, n, "triggers")? {
            trigger_scalars.push(scalar(ctx, t, "triggers", "a trigger")?);
        }
    }
    let description = m.get("description").map(|n| plain_text(ctx, n, "description")).transpose()?;
    Ok(RawOffer {
        offer: Offer {
            id,
            description,
            eligible: eligible.value.clone(),
            value,
            lever,
            channels,
            cap,
            cooldown,
            holdout,
            prior,
            triggers: Vec::new(),
            segments: SegmentSet::new(),
        },
        eligible,
        triggers: trigger_scalars,
    })
}

fn triggers(
    ctx: &Ctx<'_>,
    written: &[&Scalar],
    referenced: &SegmentSet,
    seg_index: &HashMap<String, u16>,
    segment_count: usize,
) -> Result<Vec<Trigger>, RulesError> {
    let default_set = || if referenced.is_empty() { (0..segment_count).collect() } else { *referenced };
    let default_entered = || Trigger::SegmentEntered(default_set());
    let one_segment = |s: &Scalar, seg: &str| match seg_index.get(seg.trim()) {
        Some(&i) => Ok([usize::from(i)].into_iter().collect::<SegmentSet>()),
        None => Err(ctx.at(s.pos, format!("unknown segment `{}` in trigger", seg.trim()))),
    };
    if written.is_empty() {
        return Ok(vec![default_entered()]);
    }
    let mut out = Vec::new();
    for s in written {
        let t = match s.value.as_str() {
            "segment_entered" => default_entered(),
            "cart_abandoned" => Trigger::CartAbandoned,
            "purchase" => Trigger::Purchase,
            "session_start" => Trigger::SessionStart,
            "rules_changed" => Trigger::RulesChanged(default_set()),
            v => {
                if let Some(seg) = v.strip_prefix("segment_entered:") {
                    Trigger::SegmentEntered(one_segment(s, seg)?)
                } else if let Some(seg) = v.strip_prefix("rules_changed:") {
                    Trigger::RulesChanged(one_segment(s, seg)?)
                } else {
                    return Err(ctx.at(
                        s.pos,
                        format!(
                            "unknown trigger `{v}`; expected one of segment_entered, segment_entered:<segment>, \
                             cart_abandoned, purchase, session_start, rules_changed, rules_changed:<segment>"
                        ),
                    ));
                }
            }
        };
        out.push(t);
    }
    Ok(out)
}

/// YAML reads `when: !x` as a tag and `when: "a" in b` as a quoted string
/// followed by junk. When a YAML error sits on such a line, say how to
/// write it.
fn quoting_hint(text: &str, pos: Pos) -> &'static str {
    let Some(line) = text.lines().nth(pos.line.saturating_sub(1)) else { return "" };
    let line = line.trim_start().trim_start_matches("- ");
    let value = ["when:", "eligible:"].iter().find_map(|k| line.strip_prefix(k)).map(str::trim_start);
    match value.and_then(|v| v.chars().next()) {
        Some('!' | '"' | '[' | '{' | '&' | '*' | '\'') => {
            "; a condition that starts with `!`, `\"`, `[`, `{`, `&`, `*` or `'` must be quoted as a whole, \
             e.g. when: '!consent.sms'"
        }
        _ => "",
    }
}

/// Depth-first topological order (dependencies first); a cycle is an error
/// at the `in_segment` call that closes it, naming the whole path.
fn topological_order(
    ctx: &Ctx<'_>,
    segs: &[RawSegment<'_>],
    edges: &[Vec<(u16, usize, u16)>],
) -> Result<Vec<u16>, RulesError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = segs.len();
    let mut mark = vec![Mark::New; n];
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // stack of (node, next edge index)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(target, offset, via)) = edges[node].get(*next) {
                *next += 1;
                let t = usize::from(target);
                match mark[t] {
                    Mark::Done => {}
                    Mark::New => {
                        mark[t] = Mark::Active;
                        stack.push((t, 0));
                    }
                    Mark::Active => {
                        let start = stack.iter().position(|&(s, _)| s == t).unwrap_or(0);
                        let mut path: Vec<&str> =
                            stack[start..].iter().map(|&(s, _)| segs[s].seg.name.as_str()).collect();
                        path.push(segs[t].seg.name.as_str());
                        // Report at the reference the first segment of the
                        // cycle made: the edge it was following.
                        let (first, next_edge) = stack[start];
                        let (succ, first_offset, first_via) =
                            edges[first].get(next_edge.saturating_sub(1)).copied().unwrap_or((target, offset, via));
                        let via_note = if first_via != succ {
                            format!(
                                " (through group `{}`)",
                                segs[usize::from(succ)].seg.group.as_deref().unwrap_or_default()
                            )
                        } else {
                            String::new()
                        };
                        return Err(ctx.in_scalar(
                            segs[first].when,
                            first_offset,
                            format!("cycle of in_segment references: {}{via_note}", path.join(" -> ")),
                        ));
                    }
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node as u16);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// FNV-1a, 64 bit: a content hash that is the same on every platform and
/// Rust version, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
