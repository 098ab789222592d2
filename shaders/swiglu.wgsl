// SwiGLU's gating, element-wise, with s = sigmoid(gate):
//   pass 0 (forward):    out_a = gate * s * up                     (silu(gate) * up)
//   pass 1 (gradients):  out_a = dy * up * s * (1 + gate * (1 - s)) (d gate), out_b = dy * gate * s (d up)
// The forward binds one-element placeholders for dy and out_b.

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;     // [n] (pass 1)
@group(0) @binding(1) var<storage, read_write> gate: array<{{ elem }}>;   // [n]
@group(0) @binding(2) var<storage, read_write> up: array<{{ elem }}>;     // [n]
@group(0) @binding(3) var<storage, read_write> out_a: array<{{ elem }}>;  // [n]
@group(0) @binding(4) var<storage, read_write> out_b: array<{{ elem }}>;  // [n] (pass 1)
@group(0) @binding(5) var<storage, read_write> info: array<u32>;          // n, threads per grid row

const PASS: u32 = {{ pass }}u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * info[1] + gid.x;
    if (idx >= info[0]) {
        return;
    }
    let g = f32(gate[idx]);
    let s = 1.0 / (1.0 + exp(-g));
    if (PASS == 0u) {
        out_a[idx] = {{ elem }}(g * s * f32(up[idx]));
    } else {
        let grad = f32(dy[idx]);
        out_a[idx] = {{ elem }}(grad * f32(up[idx]) * s * (1.0 + g * (1.0 - s)));
        out_b[idx] = {{ elem }}(grad * g * s);
    }
}
