//! Deterministic identities of a run: tenants, the seeded aggregates a read picks from, and the
//! aggregates each client appends to. The same numbers give the same ids in every run and in
//! every store, so a seed made through evshift and a read made directly agree.

use uuid::Uuid;

/// The aggregate type of every event the bench writes.
pub const AGGREGATE_TYPE: &str = "Order";

/// Marks client-owned (appended) aggregates apart from seeded ones in the low 64 bits.
const CLIENT_AGGREGATE_BIT: u64 = 1 << 62;

/// Tenant `n` (0-based) of the bench's default tenant set: `0e750000-0000-0000-0000-00000000000N`
/// with N = n + 1.
pub fn tenant_id(n: usize) -> Uuid {
    Uuid::from_u128(0x0e75_0000_0000_0000_0000_0000_0000_0000 | (n as u128 + 1))
}

/// The first `count` tenants of the default tenant set.
pub fn tenant_ids(count: usize) -> Vec<Uuid> {
    (0..count).map(tenant_id).collect()
}

/// Seeded aggregate `a` of `tenant`: what stream and snapshot reads pick from.
pub fn seeded_aggregate(tenant: Uuid, a: usize) -> Uuid {
    Uuid::from_u128(((tenant_fold(tenant) as u128) << 64) | (a as u128 + 1))
}

/// Aggregate `a` that client `client` appends to for `tenant`: never seeded and never shared
/// between clients, so concurrent appends never race for a version.
pub fn client_aggregate(tenant: Uuid, client: usize, a: usize) -> Uuid {
    let low =
        CLIENT_AGGREGATE_BIT | ((client as u64 & 0x3fff_ffff) << 32) | (a as u64 & 0xffff_ffff);
    Uuid::from_u128(((tenant_fold(tenant) as u128) << 64) | low as u128)
}

/// 64 bits that differ between tenants whether their ids differ in the high or the low half.
fn tenant_fold(tenant: Uuid) -> u64 {
    let value = tenant.as_u128();
    ((value >> 64) as u64).rotate_left(17) ^ (value as u64) ^ 0x9e37_79b9_7f4a_7c15
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn aggregates_of_different_tenants_and_clients_never_collide() {
        let tenants: Vec<Uuid> = tenant_ids(50)
            .into_iter()
            .chain(
                (1..=50u128)
                    .map(|n| Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n)),
            )
            .collect();
        let mut seen = HashSet::new();
        for &tenant in &tenants {
            for a in 0..20 {
                assert!(seen.insert(seeded_aggregate(tenant, a)));
                for client in 0..5 {
                    assert!(seen.insert(client_aggregate(tenant, client, a)));
                }
            }
        }
    }

    #[test]
    fn tenant_ids_are_stable() {
        assert_eq!(
            tenant_id(0).to_string(),
            "0e750000-0000-0000-0000-000000000001"
        );
        assert_eq!(tenant_ids(3)[2], tenant_id(2));
    }
}
