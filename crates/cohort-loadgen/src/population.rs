//! Customers: a profile (what a CRM knows) and a persona (how they behave).

use crate::catalog::{digits, Category, CATEGORIES};
use crate::config::Config;
use crate::dist::Cdf;
use crate::rng::Rng;
use cohort_core::event::Date;
use cohort_core::time::{civil_from_days, Duration, Timestamp};

/// Where customers live: (country, region, city, weight). A small set of
/// real places, weighted roughly by population; a few names are non-ASCII on
/// purpose.
pub const PLACES: &[(&str, &str, &str, f64)] = &[
    ("DE", "Berlin", "Berlin", 7.0),
    ("DE", "Bavaria", "Munich", 6.0),
    ("DE", "Bavaria", "Nuremberg", 2.0),
    ("DE", "Hamburg", "Hamburg", 4.0),
    ("DE", "North Rhine-Westphalia", "Cologne", 4.0),
    ("DE", "North Rhine-Westphalia", "Düsseldorf", 3.0),
    ("FR", "Île-de-France", "Paris", 8.0),
    ("FR", "Auvergne-Rhône-Alpes", "Lyon", 3.0),
    ("FR", "Provence-Alpes-Côte d'Azur", "Marseille", 3.0),
    ("FR", "Provence-Alpes-Côte d'Azur", "Nice", 1.5),
    ("NL", "North Holland", "Amsterdam", 4.0),
    ("NL", "South Holland", "Rotterdam", 2.5),
    ("NL", "South Holland", "The Hague", 2.0),
    ("ES", "Community of Madrid", "Madrid", 5.0),
    ("ES", "Catalonia", "Barcelona", 4.5),
    ("ES", "Valencian Community", "Valencia", 2.0),
    ("IT", "Lombardy", "Milan", 4.0),
    ("IT", "Lazio", "Rome", 5.0),
    ("IT", "Campania", "Naples", 2.0),
    ("AT", "Vienna", "Vienna", 3.0),
    ("BE", "Brussels-Capital", "Brussels", 2.0),
    ("PL", "Masovia", "Warsaw", 3.0),
];

const GENDERS: &[(Option<&str>, f64)] =
    &[(Some("female"), 49.0), (Some("male"), 48.0), (Some("non_binary"), 1.5), (None, 1.5)];
const INCOME_BANDS: &[(&str, f64)] =
    &[("low", 20.0), ("lower_middle", 25.0), ("middle", 30.0), ("upper_middle", 17.0), ("high", 8.0)];
const EDUCATION: &[(&str, f64)] =
    &[("secondary", 35.0), ("vocational", 25.0), ("bachelor", 25.0), ("master", 12.0), ("doctorate", 3.0)];

/// Marketing consent per channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consent {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
    pub web: bool,
}

/// The device a customer mostly uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
        }
    }
}

/// What the CRM knows about a customer. Fields that the generator changes
/// over time (consent, city, income, interests) are updated in place by the
/// generator as it emits profile updates.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Ages 18 to 80 at the start; `None` for the few who never said.
    pub birth_date: Option<Date>,
    /// Set for customers who gave an age but not a birth date.
    pub age: Option<u32>,
    pub gender: Option<&'static str>,
    pub income_band: &'static str,
    pub education: &'static str,
    pub country: &'static str,
    pub region: &'static str,
    pub city: &'static str,
    /// Declared interests, mostly those of the preferred categories.
    pub interests: Vec<&'static str>,
    pub consent: Consent,
    /// `gold` and `silver` for the most active members, `bronze` for other
    /// members, `None` for non-members.
    pub loyalty_tier: Option<&'static str>,
    pub device: Device,
    /// Shops in the mobile app rather than the web site.
    pub app_user: bool,
}

/// How a customer behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct Persona {
    /// One to three categories most of their views and purchases fall in.
    pub preferred: Vec<Category>,
    /// Relative session rate; the population's mean is 1.0 and the
    /// distribution is Zipf-skewed.
    pub activity: f64,
    /// 1 = the most active customer.
    pub activity_rank: u32,
    /// When a lapser stops buying; `None` for customers who never lapse.
    pub lapse_at: Option<Timestamp>,
}

impl Persona {
    pub fn prefers(&self, c: Category) -> bool {
        self.preferred.contains(&c)
    }

    pub fn is_lapsed(&self, at: Timestamp) -> bool {
        self.lapse_at.is_some_and(|l| at >= l)
    }
}

/// One customer.
#[derive(Clone, Debug, PartialEq)]
pub struct Customer {
    /// `c-000123`: the Kafka key and the engine's customer id.
    pub id: String,
    pub profile: Profile,
    pub persona: Persona,
}

/// Every customer of a simulation.
#[derive(Clone, Debug)]
pub struct Population {
    customers: Vec<Customer>,
}

fn pick<T: Copy>(table: &[(T, f64)], rng: &mut Rng) -> T {
    let total: f64 = table.iter().map(|e| e.1).sum();
    let mut x = rng.f64() * total;
    for &(v, w) in table {
        if x < w {
            return v;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

impl Population {
    /// Builds `config.customers` customers deterministically from the seed.
    /// Each customer's profile depends only on the seed and its index.
    pub fn new(config: &Config) -> Population {
        let n = config.customers as usize;
        // Activity ranks are a random permutation, so ids do not reveal
        // activity; weights follow Zipf-Mandelbrot with a small offset.
        let mut ranks: Vec<u32> = (1..=n as u32).collect();
        Rng::stream(config.seed, 0xAC71, 0).shuffle(&mut ranks);
        let offset = (n as f64 / 1000.0).max(1.0);
        let weight = |rank: u32| 1.0 / (f64::from(rank) + offset).powf(config.activity_skew);
        let mean = (1..=n as u32).map(weight).sum::<f64>() / n as f64;
        let categories = Cdf::new(CATEGORIES.iter().map(|c| c.weight));
        let places = Cdf::new(PLACES.iter().map(|p| p.3));
        let width = digits(n as u64).max(6);
        let start_day = config.start.day();

        let customers = (0..n)
            .map(|i| {
                let mut rng = Rng::stream(config.seed, 0x9E09, i as u64);
                let rank = ranks[i];

                let mut preferred = Vec::with_capacity(3);
                let wanted = match rng.f64() {
                    x if x < 0.4 => 1,
                    x if x < 0.8 => 2,
                    _ => 3,
                };
                while preferred.len() < wanted {
                    let c = Category(categories.sample(&mut rng) as u8);
                    if !preferred.contains(&c) {
                        preferred.push(c);
                    }
                }
                let lapse_at = rng.chance(config.lapse_share).then(|| {
                    let ms = config.lapse_after.as_millis() as f64 * (0.25 + 1.5 * rng.f64());
                    config.start + Duration::from_millis(ms as i64)
                });
                let persona = Persona { preferred, activity: weight(rank) / mean, activity_rank: rank, lapse_at };

                // Ages 18..80 uniformly: birthdays fall in every month.
                let born = rng.range(start_day - (80 * 36525) / 100, start_day - (18 * 36525) / 100 - 1);
                let (y, m, d) = civil_from_days(born);
                let (birth_date, age) = match rng.f64() {
                    x if x < 0.92 => (Some(Date { year: y, month: m, day: d }), None),
                    x if x < 0.96 => (None, Some(((start_day - born) * 100 / 36525) as u32)),
                    _ => (None, None),
                };
                let place = PLACES[places.sample(&mut rng)];
                let mut interests: Vec<&'static str> = Vec::new();
                if rng.chance(0.9) {
                    for c in &persona.preferred {
                        interests.push(c.spec().interests[rng.below(2) as usize]);
                    }
                    if rng.chance(0.3) {
                        let extra = CATEGORIES[rng.below(CATEGORIES.len() as u32) as usize].interests[0];
                        if !interests.contains(&extra) {
                            interests.push(extra);
                        }
                    }
                }
                let device = pick(&[(Device::Mobile, 55.0), (Device::Desktop, 35.0), (Device::Tablet, 10.0)], &mut rng);
                let app_user = device != Device::Desktop && rng.chance(0.35);
                let consent = Consent {
                    email: rng.chance(0.62),
                    sms: rng.chance(0.22),
                    push: app_user && rng.chance(0.6),
                    web: rng.chance(0.7),
                };
                let member = rng.chance(0.6);
                let top = f64::from(rank) / n as f64;
                let loyalty_tier = match () {
                    _ if !member => None,
                    _ if top <= 0.05 => Some("gold"),
                    _ if top <= 0.20 => Some("silver"),
                    _ => Some("bronze"),
                };
                let profile = Profile {
                    birth_date,
                    age,
                    gender: pick(GENDERS, &mut rng),
                    income_band: pick(INCOME_BANDS, &mut rng),
                    education: pick(EDUCATION, &mut rng),
                    country: place.0,
                    region: place.1,
                    city: place.2,
                    interests,
                    consent,
                    loyalty_tier,
                    device,
                    app_user,
                };
                Customer { id: format!("c-{:0width$}", i + 1), profile, persona }
            })
            .collect();
        Population { customers }
    }

    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    pub fn customer(&self, index: usize) -> &Customer {
        &self.customers[index]
    }

    pub(crate) fn customer_mut(&mut self, index: usize) -> &mut Customer {
        &mut self.customers[index]
    }

    /// Finds a customer by id (`c-000123`).
    pub fn by_id(&self, id: &str) -> Option<&Customer> {
        let n: usize = id.strip_prefix("c-")?.parse().ok()?;
        self.customers.get(n.checked_sub(1)?).filter(|c| c.id == id)
    }

    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_plausible() {
        let cfg = Config { customers: 5_000, ..Config::default() };
        let pop = Population::new(&cfg);
        assert_eq!(pop.len(), 5_000);
        assert_eq!(pop.customer(122).id, "c-000123");
        assert_eq!(pop.by_id("c-000123").unwrap().id, "c-000123");
        let mut months = [0u32; 12];
        let (sy, _, _) = cfg.start.civil();
        for c in pop.customers() {
            if let Some(d) = c.profile.birth_date {
                assert!(d.is_valid());
                let age = sy - d.year;
                assert!((17..=81).contains(&age), "{d:?}");
                months[usize::from(d.month - 1)] += 1;
            }
            assert!((1..=3).contains(&c.persona.preferred.len()));
            assert!(c.persona.activity > 0.0);
        }
        assert!(months.iter().all(|&m| m > 250), "{months:?}");
        let email = pop.customers().iter().filter(|c| c.profile.consent.email).count() as f64 / 5_000.0;
        assert!((0.55..0.7).contains(&email), "{email}");
        let lapsers = pop.customers().iter().filter(|c| c.persona.lapse_at.is_some()).count() as f64 / 5_000.0;
        assert!((0.17..0.23).contains(&lapsers), "{lapsers}");
        let mean = pop.customers().iter().map(|c| c.persona.activity).sum::<f64>() / 5_000.0;
        assert!((mean - 1.0).abs() < 1e-9);
    }
}
