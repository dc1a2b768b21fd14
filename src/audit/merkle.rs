//! The audit log's Merkle tree (RFC 6962 §2.1, RFC 9162 §2.1), stored so that proofs can be served
//! from the database at any log size.
//!
//! What is stored: the hash of every leaf, and of every *perfect* subtree (2^level leaves starting at
//! a multiple of 2^level) as soon as it is complete. A perfect subtree never changes once complete,
//! so the tables stay append-only. Any other node of a tree of size `n` (those on its right edge) is
//! the RFC 6962 hash of a range of leaves, which is folded from at most log₂ n perfect subtrees.
//!
//! Which nodes a proof needs, and how proofs are checked, is `ct-merkle`'s work
//! ([`ct_merkle::indices_for_inclusion_proof`], [`ct_merkle::indices_for_consistency_proof`],
//! [`ct_merkle::RootHash`]); this module only maps those node indices to stored perfect subtrees and
//! computes the two hash functions the RFC defines. Tests cross-check everything against `ct-merkle`'s
//! own in-memory tree and against the published RFC 6962 test vectors.

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// RFC 6962: `MTH({d}) = SHA-256(0x00 ‖ d)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new_with_prefix([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// RFC 6962: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new_with_prefix([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// RFC 6962: the hash of the empty tree is the hash of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest tree size `ct-merkle` handles without panicking (its indices are `u64`).
pub const MAX_TREE_SIZE: u64 = u64::MAX / 2;

/// A perfect subtree: the `2^level` leaves starting at leaf `index << level`. Level 0 is one leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u8,
    pub index: u64,
}

impl Node {
    pub fn first_leaf(&self) -> u64 {
        self.index << self.level
    }

    pub fn leaf_count(&self) -> u64 {
        1 << self.level
    }
}

/// The perfect subtrees that exactly cover leaves `start..end`, left to right, each as large as
/// its alignment allows. For `0..n` these are the subtrees whose hashes determine the root
/// ("compact range"); for a right-edge node of ct-merkle's array tree, its RFC 6962 subtrees.
pub fn perfect_subtrees(start: u64, end: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut at = start;
    while at < end {
        let mut level: u8 = 0;
        // Grow while `at` stays aligned and the subtree stays inside the range.
        while level < 63 {
            let size = 1u64 << (level + 1);
            if !at.is_multiple_of(size) || end - at < size {
                break;
            }
            level += 1;
        }
        nodes.push(Node {
            level,
            index: at >> level,
        });
        at += 1 << level;
    }
    nodes
}

/// The RFC 6962 hash of a range of leaves from the hashes of its [`perfect_subtrees`], left to right.
/// The first subtree is the largest, so `MTH` splits exactly there: `H(first, MTH(rest))`.
pub fn fold(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |right, left| node_hash(left, &right)),
    )
}

/// The leaves covered by node `x` of ct-merkle's array-based tree (RFC 9420 §4.1 layout: leaf `i` is
/// node `2i`, a node's level is its number of trailing one bits) in a tree of `size` leaves.
fn array_node_leaves(x: u64, size: u64) -> (u64, u64) {
    let level = x.trailing_ones();
    let start = (x >> (level + 1)) << level;
    let end = start.saturating_add(1u64 << level).min(size);
    (start, end)
}

/// Why no proof can be given for these sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the leaf index must be smaller than the tree size")]
    LeafOutsideTree,
    #[error("the first tree size must be at least 1 and at most the second")]
    BadSizes,
    #[error("the tree size is beyond what the log can hold")]
    TooLarge,
    #[error("a stored tree node is missing")]
    MissingNode,
}

/// The hashes a proof (or a root) is made of, each as the perfect subtrees to fetch and fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofPlan {
    parts: Vec<Vec<Node>>,
}

impl ProofPlan {
    /// `PATH(index, D[size])` (RFC 9162 §2.1.3.1).
    pub fn inclusion(index: u64, size: u64) -> Result<Self, ProofError> {
        if size > MAX_TREE_SIZE {
            return Err(ProofError::TooLarge);
        }
        if index >= size {
            return Err(ProofError::LeafOutsideTree);
        }
        Ok(Self::of(
            ct_merkle::indices_for_inclusion_proof(size, index),
            size,
        ))
    }

    /// `PROOF(first, D[second])` (RFC 9162 §2.1.4.1); empty when the sizes are equal.
    pub fn consistency(first: u64, second: u64) -> Result<Self, ProofError> {
        if second > MAX_TREE_SIZE {
            return Err(ProofError::TooLarge);
        }
        if first == 0 || first > second {
            return Err(ProofError::BadSizes);
        }
        Ok(Self::of(
            ct_merkle::indices_for_consistency_proof(first, second - first),
            second,
        ))
    }

    /// The root of a tree of `size` leaves, as a one-hash "proof" (the empty tree has no parts).
    pub fn root(size: u64) -> Self {
        Self {
            parts: if size == 0 {
                Vec::new()
            } else {
                vec![perfect_subtrees(0, size)]
            },
        }
    }

    fn of(array_nodes: Vec<u64>, size: u64) -> Self {
        let parts = array_nodes
            .into_iter()
            .map(|x| {
                let (start, end) = array_node_leaves(x, size);
                perfect_subtrees(start, end)
            })
            .collect();
        Self { parts }
    }

    /// Every stored node the plan needs, without repeats.
    pub fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.parts.iter().flatten().copied().collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The proof's hashes, in order, given the stored hashes of [`ProofPlan::nodes`].
    pub fn assemble(
        &self,
        stored: impl Fn(&Node) -> Option<Hash>,
    ) -> Result<Vec<Hash>, ProofError> {
        self.parts
            .iter()
            .map(|part| {
                let hashes = part
                    .iter()
                    .map(&stored)
                    .collect::<Option<Vec<Hash>>>()
                    .ok_or(ProofError::MissingNode)?;
                fold(&hashes).ok_or(ProofError::MissingNode)
            })
            .collect()
    }
}

/// Appends leaves to a tree of which only the right edge (its [`perfect_subtrees`] from 0) is known,
/// collecting every perfect subtree that the new leaves complete, for storing.
#[derive(Debug, Clone)]
pub struct Appender {
    size: u64,
    /// The tree's perfect subtrees, left to right (strictly decreasing levels).
    edge: Vec<(Node, Hash)>,
    completed: Vec<(Node, Hash)>,
}

impl Appender {
    /// The stored nodes [`Appender::new`] needs for a tree of `size` leaves.
    pub fn edge_nodes(size: u64) -> Vec<Node> {
        perfect_subtrees(0, size)
    }

    /// A tree of `size` leaves whose [`Appender::edge_nodes`] have these hashes, in that order.
    pub fn new(size: u64, edge_hashes: Vec<Hash>) -> Result<Self, ProofError> {
        let nodes = Self::edge_nodes(size);
        if nodes.len() != edge_hashes.len() {
            return Err(ProofError::MissingNode);
        }
        Ok(Self {
            size,
            edge: nodes.into_iter().zip(edge_hashes).collect(),
            completed: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf with hash `leaf`; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        self.edge.push((Node { level: 0, index }, leaf));
        while let [.., (left, left_hash), (right, right_hash)] = self.edge.as_slice()
            && left.level == right.level
        {
            let parent = Node {
                level: left.level + 1,
                index: left.index / 2,
            };
            let hash = node_hash(left_hash, right_hash);
            self.edge.truncate(self.edge.len() - 2);
            self.edge.push((parent, hash));
            self.completed.push((parent, hash));
        }
        self.size += 1;
        index
    }

    /// The RFC 6962 root of the tree as it is now.
    pub fn root(&self) -> Hash {
        let hashes: Vec<Hash> = self.edge.iter().map(|(_, h)| *h).collect();
        fold(&hashes).unwrap_or_else(empty_root)
    }

    /// Perfect subtrees of level 1 and up completed by [`Appender::push`] since the last call.
    pub fn take_completed(&mut self) -> Vec<(Node, Hash)> {
        std::mem::take(&mut self.completed)
    }
}

/// Checks `PATH(index, D[size])` against `root` for the leaf whose data is `leaf_data`, with
/// `ct-merkle`'s verifier.
pub fn verify_inclusion(
    leaf_data: &[u8],
    index: u64,
    size: u64,
    root: &Hash,
    proof: &[Hash],
) -> Result<(), ct_merkle::InclusionVerifError> {
    let root = ct_merkle::RootHash::<Sha256>::new((*root).into(), size);
    let digests: Vec<ct_merkle::digest::Output<Sha256>> =
        proof.iter().map(|h| (*h).into()).collect();
    let proof = ct_merkle::InclusionProof::<Sha256>::from_digests(digests.iter());
    root.verify_inclusion(&leaf_data, index, &proof)
}

/// Checks `PROOF(first, D[second])` between two roots, with `ct-merkle`'s verifier.
pub fn verify_consistency(
    first: (u64, &Hash),
    second: (u64, &Hash),
    proof: &[Hash],
) -> Result<(), ct_merkle::ConsistencyVerifError> {
    let old = ct_merkle::RootHash::<Sha256>::new((*first.1).into(), first.0);
    let new = ct_merkle::RootHash::<Sha256>::new((*second.1).into(), second.0);
    let digests: Vec<ct_merkle::digest::Output<Sha256>> =
        proof.iter().map(|h| (*h).into()).collect();
    let proof = ct_merkle::ConsistencyProof::<Sha256>::from_digests(digests.iter());
    new.verify_consistency(&old, &proof)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ct_merkle::mem_backed_tree::MemoryBackedTree;

    use super::*;

    /// The RFC 6962 reference inputs and roots, as published with Certificate Transparency's
    /// reference implementation (transparency-dev/merkle `testonly`).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// (index, size, proof) and (first, second, proof) from the same source.
    const INCLUSION: [(u64, u64, &[&str]); 3] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
    ];
    const CONSISTENCY: [(u64, u64, &[&str]); 3] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// A log as the sequencer builds it: leaves appended in batches, every completed perfect subtree
    /// stored.
    struct StoredTree {
        size: u64,
        nodes: HashMap<Node, Hash>,
    }

    impl StoredTree {
        fn build(data: &[Vec<u8>], batch: impl Fn(usize) -> usize) -> StoredTree {
            let mut tree = StoredTree {
                size: 0,
                nodes: HashMap::new(),
            };
            let mut at = 0;
            let mut round = 0;
            while at < data.len() {
                let take = batch(round).max(1).min(data.len() - at);
                let edge = Appender::edge_nodes(tree.size)
                    .iter()
                    .map(|n| tree.nodes[n])
                    .collect();
                let mut appender = Appender::new(tree.size, edge).expect("edge");
                for d in &data[at..at + take] {
                    let leaf = leaf_hash(d);
                    let index = appender.push(leaf);
                    tree.nodes.insert(Node { level: 0, index }, leaf);
                }
                for (node, hash) in appender.take_completed() {
                    assert!(tree.nodes.insert(node, hash).is_none(), "stored once");
                }
                tree.size = appender.size();
                at += take;
                round += 1;
            }
            tree
        }

        fn prove(&self, plan: &ProofPlan) -> Vec<Hash> {
            plan.assemble(|n| self.nodes.get(n).copied())
                .expect("all nodes stored")
        }
    }

    fn data(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("leaf {i}").into_bytes())
            .collect::<Vec<_>>()
    }

    #[test]
    fn roots_and_proofs_match_the_published_rfc_6962_vectors() {
        let leaves: Vec<Vec<u8>> = LEAVES.iter().map(|l| unhex(l)).collect();
        assert_eq!(hex::encode(empty_root()), ROOTS[0]);
        for size in 0..=8 {
            let tree = StoredTree::build(&leaves[..size], |_| 3);
            let root = tree.prove(&ProofPlan::root(size as u64));
            let root = root.first().copied().unwrap_or_else(empty_root);
            assert_eq!(hex::encode(root), ROOTS[size], "size {size}");
        }
        let tree = StoredTree::build(&leaves, |r| r + 1);
        for (index, size, want) in INCLUSION {
            let got = tree.prove(&ProofPlan::inclusion(index, size).expect("plan"));
            let got: Vec<String> = got.iter().map(hex::encode).collect();
            assert_eq!(got, want, "inclusion {index} in {size}");
        }
        for (first, second, want) in CONSISTENCY {
            let got = tree.prove(&ProofPlan::consistency(first, second).expect("plan"));
            let got: Vec<String> = got.iter().map(hex::encode).collect();
            assert_eq!(got, want, "consistency {first} to {second}");
        }
    }

    /// Against ct-merkle's own in-memory tree, which computes every node itself: same roots, same
    /// proof bytes, and ct-merkle's verifier accepts them, for every index and every pair of sizes.
    #[test]
    fn proofs_equal_ct_merkle_for_every_size_up_to_70_and_every_batching() {
        let data = data(70);
        let mut reference = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        let batchings: [&dyn Fn(usize) -> usize; 3] = [&|_| 1, &|r| (r * 7) % 5 + 1, &|_| 64];
        let trees: Vec<StoredTree> = batchings
            .iter()
            .map(|b| StoredTree::build(&data, b))
            .collect();
        let mut roots: Vec<Hash> = vec![empty_root()];
        for (n, d) in data.iter().enumerate() {
            reference.push(d.clone());
            let size = (n + 1) as u64;
            let want_root: Hash = (*reference.root().as_bytes()).into();
            roots.push(want_root);
            for tree in &trees {
                assert_eq!(tree.prove(&ProofPlan::root(size)), vec![want_root]);
                for index in 0..size {
                    let proof = tree.prove(&ProofPlan::inclusion(index, size).expect("plan"));
                    // ct-merkle can prove only against its current size, which is `size` here.
                    let want = reference.prove_inclusion(index as usize);
                    let flat: Vec<u8> = proof.concat();
                    assert_eq!(flat, want.as_bytes(), "inclusion {index} in {size}");
                    verify_inclusion(&data[index as usize], index, size, &want_root, &proof)
                        .expect("verifies");
                }
                for first in 1..=size {
                    let proof = tree.prove(&ProofPlan::consistency(first, size).expect("plan"));
                    let want = reference.prove_consistency((size - first) as usize);
                    assert_eq!(
                        proof.concat(),
                        want.as_bytes(),
                        "consistency {first}..{size}"
                    );
                    verify_consistency((first, &roots[first as usize]), (size, &want_root), &proof)
                        .expect("verifies");
                }
            }
        }
    }

    #[test]
    fn proofs_fail_for_other_data_positions_and_roots() {
        let data = data(13);
        let tree = StoredTree::build(&data, |_| 4);
        let root = tree.prove(&ProofPlan::root(13))[0];
        let proof = tree.prove(&ProofPlan::inclusion(6, 13).expect("plan"));
        assert!(verify_inclusion(&data[6], 6, 13, &root, &proof).is_ok());
        assert!(verify_inclusion(&data[7], 6, 13, &root, &proof).is_err());
        assert!(verify_inclusion(&data[6], 7, 13, &root, &proof).is_err());
        assert!(verify_inclusion(&data[6], 6, 26, &root, &proof).is_err());
        let old = tree.prove(&ProofPlan::root(5))[0];
        let consistency = tree.prove(&ProofPlan::consistency(5, 13).expect("plan"));
        assert!(verify_consistency((5, &old), (13, &root), &consistency).is_ok());
        let forged = leaf_hash(b"forged");
        assert!(verify_consistency((5, &forged), (13, &root), &consistency).is_err());
    }

    #[test]
    fn impossible_proofs_are_refused_not_panicked() {
        assert_eq!(ProofPlan::inclusion(0, 0), Err(ProofError::LeafOutsideTree));
        assert_eq!(ProofPlan::inclusion(5, 5), Err(ProofError::LeafOutsideTree));
        assert_eq!(ProofPlan::consistency(0, 5), Err(ProofError::BadSizes));
        assert_eq!(ProofPlan::consistency(6, 5), Err(ProofError::BadSizes));
        assert_eq!(ProofPlan::inclusion(0, u64::MAX), Err(ProofError::TooLarge));
        assert!(
            ProofPlan::consistency(3, 3)
                .expect("equal sizes")
                .nodes()
                .is_empty()
        );
        assert!(
            Appender::new(3, vec![[0; 32]]).is_err(),
            "size 3 has two edge nodes"
        );
    }

    #[test]
    fn perfect_subtrees_cover_ranges_exactly() {
        assert_eq!(
            perfect_subtrees(0, 13),
            vec![
                Node { level: 3, index: 0 },
                Node { level: 2, index: 2 },
                Node {
                    level: 0,
                    index: 12
                }
            ]
        );
        assert_eq!(
            perfect_subtrees(8, 11),
            vec![
                Node { level: 1, index: 4 },
                Node {
                    level: 0,
                    index: 10
                }
            ]
        );
        for (start, end) in [(0, 1), (4, 8), (0, 1000), (512, 777)] {
            let nodes = perfect_subtrees(start, end);
            let mut at = start;
            for n in nodes {
                assert_eq!(n.first_leaf(), at);
                at += n.leaf_count();
            }
            assert_eq!(at, end);
        }
    }
}
