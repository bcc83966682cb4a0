/work/main/target-ci/debug/deps/num_conv-3d1a4ee02bd72cc0.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num-conv-0.2.2/src/lib.rs

/work/main/target-ci/debug/deps/libnum_conv-3d1a4ee02bd72cc0.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num-conv-0.2.2/src/lib.rs

/work/main/target-ci/debug/deps/libnum_conv-3d1a4ee02bd72cc0.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num-conv-0.2.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num-conv-0.2.2/src/lib.rs:
