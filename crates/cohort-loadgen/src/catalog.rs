//! The product catalogue: categories with realistic price ranges and
//! Zipf-skewed product popularity within each category.

use crate::dist::Cdf;
use crate::rng::Rng;

/// A product category, an index into [`CATEGORIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(pub u8);

impl Category {
    /// Every category, in [`CATEGORIES`] order.
    pub fn all() -> impl Iterator<Item = Category> {
        (0..CATEGORIES.len() as u8).map(Category)
    }

    /// Looks a category up by its wire name (`"keto"`).
    pub fn parse(name: &str) -> Option<Category> {
        CATEGORIES.iter().position(|c| c.name == name).map(|i| Category(i as u8))
    }

    pub fn spec(self) -> &'static CategorySpec {
        &CATEGORIES[usize::from(self.0)]
    }

    /// The name used in events (`click.category`, `items.category`) and rules
    /// (`affinity("keto")`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

/// What the generator knows about a category.
#[derive(Debug)]
pub struct CategorySpec {
    pub name: &'static str,
    /// Interests a customer who prefers this category declares in a profile.
    pub interests: [&'static str; 2],
    /// What such a customer types into the search box.
    pub queries: [&'static str; 3],
    /// Unit prices are log-uniform in this range.
    pub price_range: (f64, f64),
    /// Relative share of the catalogue and of shoppers' preferences.
    pub weight: f64,
}

/// The categories, with weights loosely after European e-commerce category
/// shares (fashion and electronics lead; diets are niches).
pub const CATEGORIES: [CategorySpec; 12] = [
    CategorySpec {
        name: "keto",
        interests: ["keto", "low_carb"],
        queries: ["keto snacks", "low carb bread", "mct oil"],
        price_range: (3.0, 45.0),
        weight: 4.0,
    },
    CategorySpec {
        name: "vegan",
        interests: ["vegan", "plant_based"],
        queries: ["vegan protein", "oat milk", "tofu"],
        price_range: (2.0, 35.0),
        weight: 5.0,
    },
    CategorySpec {
        name: "gluten-free",
        interests: ["gluten_free", "healthy_eating"],
        queries: ["gluten free pasta", "gluten free flour", "rice crackers"],
        price_range: (2.0, 25.0),
        weight: 4.0,
    },
    CategorySpec {
        name: "fashion",
        interests: ["fashion", "streetwear"],
        queries: ["sneakers", "summer dress", "denim jacket"],
        price_range: (12.0, 250.0),
        weight: 18.0,
    },
    CategorySpec {
        name: "outdoor",
        interests: ["hiking", "camping"],
        queries: ["hiking boots", "tent", "rain jacket"],
        price_range: (8.0, 600.0),
        weight: 7.0,
    },
    CategorySpec {
        name: "electronics",
        interests: ["gadgets", "gaming"],
        queries: ["headphones", "usb c charger", "smartwatch"],
        price_range: (10.0, 1500.0),
        weight: 12.0,
    },
    CategorySpec {
        name: "beauty",
        interests: ["skincare", "makeup"],
        queries: ["vitamin c serum", "mascara", "sunscreen"],
        price_range: (4.0, 90.0),
        weight: 10.0,
    },
    CategorySpec {
        name: "home",
        interests: ["interior_design", "cooking"],
        queries: ["cast iron pan", "bed linen", "desk lamp"],
        price_range: (5.0, 400.0),
        weight: 12.0,
    },
    CategorySpec {
        name: "kids",
        interests: ["parenting", "toys"],
        queries: ["lego", "baby stroller", "kids raincoat"],
        price_range: (5.0, 150.0),
        weight: 7.0,
    },
    CategorySpec {
        name: "pets",
        interests: ["dogs", "cats"],
        queries: ["dog food", "cat litter", "dog leash"],
        price_range: (3.0, 120.0),
        weight: 7.0,
    },
    CategorySpec {
        name: "sports",
        interests: ["running", "fitness"],
        queries: ["running shoes", "yoga mat", "dumbbells"],
        price_range: (8.0, 300.0),
        weight: 8.0,
    },
    CategorySpec {
        name: "books",
        interests: ["reading", "crime_fiction"],
        queries: ["bestsellers", "cookbook", "crime novel"],
        price_range: (6.0, 45.0),
        weight: 6.0,
    },
];

/// One product.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// `p-00042`.
    pub id: String,
    pub category: Category,
    /// Unit price in the shop currency, ending in .99 like real price tags.
    pub price: f64,
    /// Popularity rank within its category, 1 = most popular.
    pub rank: u32,
}

/// Products by category, with a popularity distribution per category.
#[derive(Clone, Debug)]
pub struct Catalog {
    products: Vec<Product>,
    /// Product indexes per category, most popular first.
    by_category: Vec<Vec<u32>>,
    popularity: Vec<Cdf>,
    categories: Cdf,
}

impl Catalog {
    /// `products` products (at least one per category), spread over the
    /// categories by weight, ids interleaved, popularity Zipf with
    /// `skew` as the exponent within each category.
    pub fn new(products: u32, skew: f64, seed: u64) -> Catalog {
        let n_cat = CATEGORIES.len();
        let products = (products as usize).max(n_cat);
        let total_weight: f64 = CATEGORIES.iter().map(|c| c.weight).sum();
        // At least one product per category; the rest by weight, largest
        // remainders first so the counts add up exactly.
        let spare = products - n_cat;
        let exact: Vec<f64> = CATEGORIES.iter().map(|c| spare as f64 * c.weight / total_weight).collect();
        let mut counts: Vec<usize> = exact.iter().map(|e| 1 + e.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..n_cat).collect();
        by_remainder.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
        let mut missing = products - counts.iter().sum::<usize>();
        for &c in by_remainder.iter().cycle() {
            if missing == 0 {
                break;
            }
            counts[c] += 1;
            missing -= 1;
        }

        let mut rng = Rng::stream(seed, 0xCA7A, 0);
        let mut cats: Vec<u8> = counts.iter().enumerate().flat_map(|(c, &n)| std::iter::repeat_n(c as u8, n)).collect();
        rng.shuffle(&mut cats);

        let width = digits(products as u64).max(5);
        let mut by_category: Vec<Vec<u32>> = vec![Vec::new(); n_cat];
        let mut list = Vec::with_capacity(products);
        for (i, &c) in cats.iter().enumerate() {
            let (lo, hi) = CATEGORIES[usize::from(c)].price_range;
            let price = (lo.ln() + rng.f64() * (hi.ln() - lo.ln())).exp().floor() + 0.99;
            list.push(Product { id: format!("p-{:0width$}", i + 1), category: Category(c), price, rank: 0 });
            by_category[usize::from(c)].push(i as u32);
        }
        for ids in &mut by_category {
            rng.shuffle(ids);
            for (rank, &p) in ids.iter().enumerate() {
                list[p as usize].rank = rank as u32 + 1;
            }
        }
        let popularity = by_category.iter().map(|ids| Cdf::zipf(ids.len(), skew, 0.0)).collect();
        let categories = Cdf::new(CATEGORIES.iter().map(|c| c.weight));
        Catalog { products: list, by_category, popularity, categories }
    }

    pub fn products(&self) -> &[Product] {
        &self.products
    }

    pub fn product(&self, index: u32) -> &Product {
        &self.products[index as usize]
    }

    /// Product indexes of a category, most popular first.
    pub fn in_category(&self, category: Category) -> &[u32] {
        &self.by_category[usize::from(category.0)]
    }

    /// A product of `category`, drawn by popularity.
    #[inline]
    pub fn sample_in(&self, category: Category, rng: &mut Rng) -> u32 {
        let c = usize::from(category.0);
        self.by_category[c][self.popularity[c].sample(rng)]
    }

    /// A category, drawn by its weight (what a shopper without a preference
    /// wanders into).
    #[inline]
    pub fn sample_category(&self, rng: &mut Rng) -> Category {
        Category(self.categories.sample(rng) as u8)
    }
}

pub(crate) fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_has_products_with_prices_in_range() {
        let cat = Catalog::new(1000, 1.0, 5);
        assert_eq!(cat.products().len(), 1000);
        for c in Category::all() {
            assert!(!cat.in_category(c).is_empty(), "{}", c.name());
            let (lo, hi) = c.spec().price_range;
            for &p in cat.in_category(c) {
                let p = cat.product(p);
                assert_eq!(p.category, c);
                assert!(p.price >= lo.floor() && p.price <= hi + 1.0, "{p:?}");
            }
        }
        assert_eq!(cat.product(0).id, "p-00001");
        // Tiny catalogues still cover every category.
        let tiny = Catalog::new(3, 1.0, 5);
        assert_eq!(tiny.products().len(), CATEGORIES.len());
    }

    #[test]
    fn the_most_popular_product_of_a_category_is_drawn_most() {
        let cat = Catalog::new(2000, 1.0, 5);
        let mut rng = Rng::new(1);
        let fashion = Category::parse("fashion").unwrap();
        let top = cat.in_category(fashion)[0];
        let hits = (0..10_000).filter(|_| cat.sample_in(fashion, &mut rng) == top).count();
        assert!(hits > 1_000, "{hits}");
        assert_eq!(cat.product(top).rank, 1);
    }
}
