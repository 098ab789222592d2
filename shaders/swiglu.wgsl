// SwiGLU's gating, element-wise: y = silu(gate) * up = gate * sigmoid(gate) * up.

@group(0) @binding(0) var<storage, read_write> gate: array<{{ elem }}>;  // [n]
@group(0) @binding(1) var<storage, read_write> up: array<{{ elem }}>;    // [n]
@group(0) @binding(2) var<storage, read_write> y: array<{{ elem }}>;     // [n]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;         // n, threads per grid row

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * info[1] + gid.x;
    if (idx >= info[0]) {
        return;
    }
    let g = f32(gate[idx]);
    let s = 1.0 / (1.0 + exp(-g));
    y[idx] = {{ elem }}(g * s * f32(up[idx]));
}
