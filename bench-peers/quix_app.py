"""Customer segmentation in Quix Streams: the peer of `cohort run` in
`make bench-peers` (scripts/bench-peers.sh).

An honest equivalent of the segment half of deploy/rules.yaml, written the
way a Quix Streams user would write it: the four input topics (JSON values,
keyed by customer id) are concatenated into one StreamingDataFrame, one
stateful `apply` keeps each customer's state in Quix's RocksDB state store
(one JSON document per customer, changelogged to a topic Quix creates),
folds the event into it, evaluates all 22 segments of deploy/rules.yaml at
the event's time with the same thresholds, and emits one segment-change
record (customer, time, entered, exited, cause) whenever membership
changes. What it leaves out next to cohort (timers, offers, validation and
dead letters, exact millisecond windows, ...) is in bench-peers/README.md.

    python quix_app.py --broker HOST:PORT --group G --state-dir DIR \
        [--output quix-segment-changes] [--progress FILE [--expect N]] \
        [--fetch-wait-ms 10]

It runs until SIGTERM or Ctrl-C (Quix then commits and leaves the group).
With --progress it writes "<records processed> <unix time>" to FILE about
every half second, and at once when the count reaches --expect: the
benchmark's stall reports and its "all processed" time.
"""

import argparse
import datetime
import os
import signal
import sys
import time

from quixstreams import Application

# --- deploy/rules.yaml, as constants ------------------------------------------

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SESSION_GAP_MS = 30 * 60_000  # settings.session_gap: 30m
AFFINITY_HALF_LIFE_MS = 30 * DAY_MS  # settings.affinity_half_life: 30d
# cohort's StateSettings and affinity weights (crates/cohort-core/src/state.rs)
AFFINITY_MIN_EVIDENCE = 5.0
AFFINITY_WEIGHT = {
    "page_view": 0.5,
    "search": 0.5,
    "product_view": 1.0,
    "add_to_cart": 3.0,
}
PURCHASE_AFFINITY_WEIGHT = 5.0
MAX_CATEGORIES = 16
MAX_CART_LINES = 32
RECENT_EVENTS = 16
WINDOW_DAYS = 365  # day buckets older than this are dropped
MAX_TEXT = 64

COUNTERS = ("orders", "spend", "page_views", "product_views", "sessions")
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# --- per-customer state --------------------------------------------------------
#
# One JSON document per customer under the key "customer" of Quix's state
# (the store is scoped by the message key, the customer id):
#   at        latest evaluation instant (evaluation never goes back in time)
#   seen      [first, last] click or purchase time
#   fp, lp    first and last purchase time
#   days      counter -> [[UTC day, amount], ...], the last 365 days
#   total     counter -> lifetime amount (spend in cents)
#   cart      [[product id, quantity, unit price in cents], ...]; cart_at: last add
#   aff       decayed category affinity: [as_of, total, [[category, weight], ...]]
#   p         profile: birth date (days since 1970), declared age, country,
#             region, city, interests, email consent
#   recent    the last 16 event ids (duplicates change nothing)
#   seg       current segments, sorted


def new_state():
    return {
        "at": None,
        "seen": None,
        "fp": None,
        "lp": None,
        "days": {c: [] for c in COUNTERS},
        "total": {c: 0 for c in COUNTERS},
        "cart": [],
        "cart_at": None,
        "aff": [0, 0.0, []],
        "p": {},
        "recent": [],
        "seg": [],
    }


def norm_lower(s):
    s = s.strip().lower()[:MAX_TEXT] if s else ""
    return s or None


def norm_upper(s):
    s = s.strip().upper()[:MAX_TEXT] if s else ""
    return s or None


def norm_trim(s):
    s = s.strip()[:MAX_TEXT] if s else ""
    return s or None


def add_count(st, counter, t, amount):
    """Adds `amount` to `counter` in the UTC day of `t` and to its lifetime
    total; drops days that have left the 365-day window."""
    st["total"][counter] += amount
    day = t // DAY_MS
    buckets = st["days"][counter]
    if buckets and buckets[-1][0] == day:
        buckets[-1][1] += amount
    else:
        # Usually the newest day; a late event finds its place.
        i = len(buckets)
        while i > 0 and buckets[i - 1][0] > day:
            i -= 1
        if i > 0 and buckets[i - 1][0] == day:
            buckets[i - 1][1] += amount
        else:
            buckets.insert(i, [day, amount])
    newest = buckets[-1][0]
    if buckets[0][0] <= newest - WINDOW_DAYS:
        st["days"][counter] = [b for b in buckets if b[0] > newest - WINDOW_DAYS]


def window(st, counter, now, days):
    """Sum of `counter` over the last `days` UTC days up to `now`'s day (as
    cohort counts a contribution it keeps per day: day(now) - N < day <=
    day(now))."""
    today = now // DAY_MS
    lo = today - days
    s = 0
    for day, amount in reversed(st["days"][counter]):
        if day <= lo:
            break
        if day <= today:
            s += amount
    return s


def touch(st, t):
    """A click or purchase: first/last seen and sessions (a new session after
    more than session_gap without activity). Returns whether one started."""
    seen = st["seen"]
    if seen is None:
        st["seen"] = [t, t]
        new_session = True
    else:
        new_session = t > seen[1] + SESSION_GAP_MS
        seen[0] = min(seen[0], t)
        seen[1] = max(seen[1], t)
    if new_session:
        add_count(st, "sessions", t, 1)
    return new_session


def affinity_add(st, category, weight, t):
    """cohort's Affinities::add: exponentially decayed weights per category,
    normalised by the decayed total, the 16 strongest categories kept."""
    if weight <= 0.0 or not category:
        return
    aff = st["aff"]
    as_of, total, weights = aff
    if not weights and total == 0.0:
        as_of = t
        w = weight
    elif t > as_of:
        f = 2.0 ** (-(t - as_of) / AFFINITY_HALF_LIFE_MS)
        for e in weights:
            e[1] *= f
        total *= f
        as_of = t
        w = weight
    else:
        w = weight * 2.0 ** (-(as_of - t) / AFFINITY_HALF_LIFE_MS)
    total += w
    aff[0], aff[1] = as_of, total
    for e in weights:
        if e[0] == category:
            e[1] += w
            return
    if len(weights) < MAX_CATEGORIES:
        weights.append([category, w])
        return
    weakest = min(range(len(weights)), key=lambda i: weights[i][1])
    if weights[weakest][1] < w:
        weights[weakest] = [category, w]


def affinity(st, category, now):
    as_of, total, weights = st["aff"]
    for c, w in weights:
        if c == category:
            denom = max(total, AFFINITY_MIN_EVIDENCE)
            f = 2.0 ** (-(now - as_of) / AFFINITY_HALF_LIFE_MS) if now > as_of else 1.0
            return min(max(w * f / denom, 0.0), 1.0)
    return 0.0


def cents(x):
    return int(round(x * 100.0))


def record_click(st, v, t):
    touch(st, t)
    kind = v.get("kind")
    if kind == "page_view":
        add_count(st, "page_views", t, 1)
    elif kind == "product_view":
        add_count(st, "product_views", t, 1)
    elif kind == "add_to_cart":
        pid = (v.get("product_id") or "")[:MAX_TEXT]
        if pid.strip():
            q = v.get("quantity")
            qty = max(1 if q is None else q, 0)
            price = v.get("price")
            for line in st["cart"]:
                if line[0] == pid:
                    line[1] += qty
                    if price is not None:
                        line[2] = cents(price)
                    break
            else:
                if len(st["cart"]) < MAX_CART_LINES:
                    st["cart"].append([pid, qty, 0 if price is None else cents(price)])
            st["cart"] = [line for line in st["cart"] if line[1] > 0]
        st["cart_at"] = t if st["cart_at"] is None else max(st["cart_at"], t)
    elif kind == "remove_from_cart":
        pid = (v.get("product_id") or "")[:MAX_TEXT]
        if pid.strip():
            q = v.get("quantity")
            for line in st["cart"]:
                if line[0] == pid:
                    line[1] = 0 if q is None else max(line[1] - max(q, 0), 0)
            st["cart"] = [line for line in st["cart"] if line[1] > 0]
            if not st["cart"]:
                st["cart_at"] = None
    category = v.get("category")
    if category:
        affinity_add(st, norm_lower(category), AFFINITY_WEIGHT.get(kind, 0.0), t)
    # The CRM is authoritative; clicks only fill a location it never stated.
    geo = v.get("geo")
    p = st["p"]
    if geo and not (p.get("country") or p.get("region") or p.get("city")):
        p["country"] = norm_upper(geo.get("country"))
        p["region"] = norm_trim(geo.get("region"))
        p["city"] = norm_trim(geo.get("city"))


def record_purchase(st, v, t):
    touch(st, t)
    add_count(st, "orders", t, 1)
    add_count(st, "spend", t, cents(v.get("total") or 0.0))
    st["fp"] = t if st["fp"] is None else min(st["fp"], t)
    st["lp"] = t if st["lp"] is None else max(st["lp"], t)
    for item in v.get("items") or ():
        category = item.get("category")
        if category:
            affinity_add(st, norm_lower(category), PURCHASE_AFFINITY_WEIGHT, t)
    # Checkout converts the cart, whatever was in it.
    st["cart"] = []
    st["cart_at"] = None


def record_profile(st, v):
    p = st["p"]
    if v.get("birth_date") is not None:
        p["birth"] = v["birth_date"]
    if v.get("age") is not None:
        p["age"] = v["age"]
    if any(v.get(k) is not None for k in ("country", "region", "city")):
        p["country"] = norm_upper(v.get("country"))
        p["region"] = norm_trim(v.get("region"))
        p["city"] = norm_trim(v.get("city"))
    if v.get("interests") is not None:
        p["interests"] = sorted({s for s in (norm_lower(i) for i in v["interests"]) if s})[:16]
    consent = v.get("consent") or {}
    if consent.get("email") is not None:
        p["email"] = consent["email"]


# --- the 22 segments of deploy/rules.yaml --------------------------------------


def age_at(birth_days, now):
    """Completed years (UTC); someone born on 29 February has their birthday
    on 28 February in common years."""
    b = datetime.date.fromordinal(EPOCH_ORDINAL + birth_days)
    today = datetime.date.fromordinal(EPOCH_ORDINAL + now // DAY_MS)
    bm, bd = b.month, b.day
    if bm == 2 and bd == 29 and not (today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)):
        bd = 28
    age = today.year - b.year - (1 if (today.month, today.day) < (bm, bd) else 0)
    return max(age, 0)


def segments(st, now):
    """The segments the customer is in at `now`. A comparison with a value
    the customer does not have is false, as in cohort."""
    out = []
    orders_lifetime = st["total"]["orders"]
    sessions_lifetime = st["total"]["sessions"]
    orders_30d = window(st, "orders", now, 30)

    # shopping moments
    if st["cart"] and sum(line[1] for line in st["cart"]) > 0 and st["cart_at"] is not None:
        if now - st["cart_at"] >= HOUR_MS:
            out.append("cart_abandoner")
    if window(st, "product_views", now, 7) >= 10 and orders_30d == 0:
        out.append("window_shopper")
    # lifecycle
    if orders_lifetime == 0 and sessions_lifetime == 1:
        out.append("first_time_visitor")
    if orders_lifetime > 0 and st["fp"] is not None and now - st["fp"] < 30 * DAY_MS:
        out.append("new_customer")
    if window(st, "orders", now, 90) >= 3:
        out.append("frequent_buyer")
    if orders_lifetime > 0 and st["lp"] is not None:
        since = now - st["lp"]
        if 45 * DAY_MS <= since < 90 * DAY_MS:
            out.append("at_risk")
        if since >= 90 * DAY_MS:
            out.append("lapsed")
    # value tiers: one exclusive group, lowest priority wins (spend in cents)
    spend_365d = window(st, "spend", now, 365)
    if spend_365d >= 100_000:
        out.append("vip")
    elif spend_365d >= 50_000:
        out.append("gold")
    elif spend_365d >= 15_000:
        out.append("silver")
    if orders_lifetime > 0 and st["total"]["spend"] / 100.0 / orders_lifetime >= 120:
        out.append("big_basket")
    # diets, from decayed category affinity
    if st["aff"][2]:
        if affinity(st, "keto", now) >= 0.5:
            out.append("keto")
        if affinity(st, "vegan", now) >= 0.5:
            out.append("vegan")
        if affinity(st, "gluten-free", now) >= 0.5:
            out.append("gluten_free")
    # profile
    p = st["p"]
    birth = p.get("birth")
    if birth is not None:
        age = age_at(birth, now)
        month = datetime.date.fromordinal(EPOCH_ORDINAL + now // DAY_MS).month
        if datetime.date.fromordinal(EPOCH_ORDINAL + birth).month == month:
            out.append("birthday_month")
    else:
        age = p.get("age")
    country = p.get("country")
    if country == "DE" and p.get("region") == "Bavaria":
        out.append("bavaria")
    if country in ("DE", "AT", "CH"):
        out.append("dach")
    if age is not None:
        if 18 <= age < 30:
            out.append("age_18_29")
        elif 30 <= age < 50:
            out.append("age_30_49")
        elif age >= 50:
            out.append("age_50_plus")
    interests = p.get("interests") or ()
    if "fitness" in interests or "running" in interests:
        out.append("fitness_fan")
    if p.get("email") is True:
        out.append("email_reachable")
    out.sort()
    return out


# --- the stateful step ---------------------------------------------------------


def decide(value, key, timestamp, headers, state):
    """Folds one input record into its customer's state and returns the
    segment change it causes: a list of zero or one records (`expand=True`)."""
    if value is None:
        # A null profile (a forget request): leave every segment, drop the state.
        st = state.get("customer")
        state.delete("customer")
        if st and st["seg"]:
            return [{"customer": key, "time": st["at"], "entered": [], "exited": st["seg"], "cause": "forget"}]
        return []
    st = state.get("customer") or new_state()
    event_id = value.get("id")
    if event_id in st["recent"]:
        return []  # a duplicate: changes nothing
    st["recent"].append(event_id)
    if len(st["recent"]) > RECENT_EVENTS:
        del st["recent"][0]
    t = value["time"]
    if "kind" in value:
        record_click(st, value, t)
    elif "order_id" in value:
        record_purchase(st, value, t)
    elif "outcome" in value:
        pass  # offer outcomes train cohort's offer propensities; no segment reads them
    else:
        record_profile(st, value)
    now = t if st["at"] is None else max(st["at"], t)
    st["at"] = now
    new = segments(st, now)
    old = st["seg"]
    change = []
    if new != old:
        change = [
            {
                "customer": value.get("customer") or key,
                "time": now,
                "entered": [s for s in new if s not in old],
                "exited": [s for s in old if s not in new],
                "cause": {"kind": "event", "event_id": event_id},
            }
        ]
        st["seg"] = new
    state.set("customer", st)
    return change


INPUTS = ("clickstream", "purchases", "customer-profiles", "offer-outcomes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--output", default="quix-segment-changes")
    ap.add_argument("--progress", default=None)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--fetch-wait-ms", default="10", help="librdkafka fetch.wait.max.ms; '' for its default")
    args = ap.parse_args()

    processed = 0
    last_write = 0.0

    def write_progress(now):
        tmp = args.progress + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{processed} {now:.3f}\n")
        os.replace(tmp, args.progress)

    def on_processed(topic, partition, offset):
        nonlocal processed, last_write
        processed += 1
        if args.progress:
            now = time.time()
            if now - last_write >= 0.5 or processed == args.expect:
                last_write = now
                write_progress(now)

    consumer_config = {}
    if args.fetch_wait_ms:
        consumer_config["fetch.wait.max.ms"] = int(args.fetch_wait_ms)
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        consumer_extra_config=consumer_config,
        on_message_processed=on_processed,
        loglevel="INFO",
    )
    topics = [app.topic(name, key_deserializer="str", value_deserializer="json") for name in INPUTS]
    sdf = app.dataframe(topics[0])
    for t in topics[1:]:
        sdf = sdf.concat(app.dataframe(t))
    sdf = sdf.apply(decide, stateful=True, expand=True, metadata=True)
    sdf.to_topic(app.topic(args.output, key_serializer="str", value_serializer="json"))
    try:
        app.run()
    finally:
        if args.progress:
            write_progress(time.time())
    print(f"quix_app: processed {processed} records", file=sys.stderr)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
