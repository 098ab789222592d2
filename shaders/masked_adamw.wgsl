// AdamW (PyTorch semantics) applied in place to the selected rows of a weight matrix, fused:
// moments, bias correction and decoupled weight decay in one pass. The gradient and the moments
// are compact ([r, d_in], one row per selected weight row), so no dense gradient ever exists.

@group(0) @binding(0) var<storage, read_write> w: array<{{ elem }}>;     // [d_out, d_in], updated in place
@group(0) @binding(1) var<storage, read_write> grad: array<{{ elem }}>;  // [r, d_in]
@group(0) @binding(2) var<storage, read_write> m: array<{{ elem }}>;     // [r, d_in], updated in place
@group(0) @binding(3) var<storage, read_write> v: array<{{ elem }}>;     // [r, d_in], updated in place
@group(0) @binding(4) var<storage, read_write> rows: array<u32>;         // [r]
@group(0) @binding(5) var<storage, read_write> hp: array<f32>;           // lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale
@group(0) @binding(6) var<storage, read_write> info: array<u32>;         // d_in, r, threads per grid row

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d_in = info[0];
    let r_count = info[1];
    // A 2-D grid: one dimension alone is capped at 65535 workgroups.
    let idx = gid.y * info[2] + gid.x;
    if (idx >= d_in * r_count) {
        return;
    }
    let lr = hp[0];
    let beta1 = hp[1];
    let beta2 = hp[2];
    let g = grad[idx] * hp[7];
    let m1 = beta1 * m[idx] + (1.0 - beta1) * g;
    let v1 = beta2 * v[idx] + (1.0 - beta2) * g * g;
    m[idx] = m1;
    v[idx] = v1;
    let wi = rows[idx / d_in] * d_in + idx % d_in;
    let update = (m1 / hp[5]) / (sqrt(v1 / hp[6]) + hp[3]);
    w[wi] = w[wi] * (1.0 - lr * hp[4]) - lr * update;
}
