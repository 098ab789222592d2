// RMSNorm over the rows of x, with r = 1 / sqrt(mean(x^2) + eps) per row:
//   pass 0 (forward):         out = x * r * w
//   pass 1 (input gradient):  out = r * dy * w - x * r^3 / d * sum(dy * w * x)
// One workgroup per row: its threads stride over the row, reduce their partial sums (x^2, and
// dy w x for the gradient) in workgroup memory, then write the row. The forward binds a
// one-element placeholder for dy.

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;   // [n, d] (pass 1)
@group(0) @binding(1) var<storage, read_write> x: array<{{ elem }}>;    // [n, d]
@group(0) @binding(2) var<storage, read_write> w: array<{{ elem }}>;    // [d]
@group(0) @binding(3) var<storage, read_write> out: array<{{ elem }}>;  // [n, d]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;        // n, d, eps as f32 bits, rows per grid row

const PASS: u32 = {{ pass }}u;
const THREADS: u32 = {{ workgroup }}u;
var<workgroup> partial: array<vec2<f32>, THREADS>;  // (sum x^2, sum dy w x)

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
    var acc = vec2<f32>(0.0, 0.0);
    if (live) {
        for (var j = li; j < d; j += THREADS) {
            let xv = f32(x[base + j]);
            acc.x += xv * xv;
            if (PASS == 1u) {
                acc.y += f32(dy[base + j]) * f32(w[j]) * xv;
            }
        }
    }
    partial[li] = acc;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(partial[0].x / f32(d) + eps);
    let c = partial[0].y * r * r * r / f32(d);
    if (live) {
        for (var j = li; j < d; j += THREADS) {
            if (PASS == 0u) {
                out[base + j] = {{ elem }}(f32(x[base + j]) * r * f32(w[j]));
            } else {
                out[base + j] = {{ elem }}(r * f32(dy[base + j]) * f32(w[j]) - f32(x[base + j]) * c);
            }
        }
    }
}
