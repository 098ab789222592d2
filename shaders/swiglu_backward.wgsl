// SwiGLU's gradients, element-wise, with s = sigmoid(gate):
//   d_up = dy * gate * s        d_gate = dy * up * s * (1 + gate * (1 - s))

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;      // [n]
@group(0) @binding(1) var<storage, read_write> gate: array<{{ elem }}>;    // [n]
@group(0) @binding(2) var<storage, read_write> up: array<{{ elem }}>;      // [n]
@group(0) @binding(3) var<storage, read_write> d_gate: array<{{ elem }}>;  // [n]
@group(0) @binding(4) var<storage, read_write> d_up: array<{{ elem }}>;    // [n]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;           // n, threads per grid row

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * info[1] + gid.x;
    if (idx >= info[0]) {
        return;
    }
    let g = f32(gate[idx]);
    let s = 1.0 / (1.0 + exp(-g));
    let grad = f32(dy[idx]);
    d_up[idx] = {{ elem }}(grad * g * s);
    d_gate[idx] = {{ elem }}(grad * f32(up[idx]) * s * (1.0 + g * (1.0 - s)));
}
