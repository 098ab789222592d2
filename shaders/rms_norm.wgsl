// RMSNorm over the rows of x: y = x / sqrt(mean(x^2) + eps) * w, in one pass that reads x twice
// (sum of squares, then scale) and writes y once. One workgroup per row: its threads stride over
// the row and reduce their partial sums in workgroup memory.

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;  // [n, d]
@group(0) @binding(1) var<storage, read_write> w: array<{{ elem }}>;  // [d]
@group(0) @binding(2) var<storage, read_write> y: array<{{ elem }}>;  // [n, d]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;      // n, d, eps as f32 bits, rows per grid row

const THREADS: u32 = {{ workgroup }}u;
var<workgroup> partial: array<f32, THREADS>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n = info[0];
    let d = info[1];
    let eps = bitcast<f32>(info[2]);
    // A 2-D grid: one dimension alone is capped at 65535 workgroups.
    let row = wg.y * info[3] + wg.x;
    // A workgroup past the last row still meets every barrier; it reads and writes nothing.
    let live = row < n;
    let base = row * d;
    var ss = 0.0;
    if (live) {
        for (var j = li; j < d; j += THREADS) {
            let v = f32(x[base + j]);
            ss += v * v;
        }
    }
    partial[li] = ss;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(partial[0] / f32(d) + eps);
    if (live) {
        for (var j = li; j < d; j += THREADS) {
            y[base + j] = {{ elem }}(f32(x[base + j]) * r * f32(w[j]));
        }
    }
}
