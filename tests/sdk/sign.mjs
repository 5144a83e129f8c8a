// Signs a webhook body with a vendor's own Node SDK and prints the headers as JSON.
// usage: node sign.mjs <stripe|github> <secret> <body-file>
import { readFileSync } from 'node:fs';
import Stripe from 'stripe';
import { sign } from '@octokit/webhooks-methods';

const [vendor, secret, file] = process.argv.slice(2);
const payload = readFileSync(file, 'utf8');
let headers;
if (vendor === 'stripe') {
  const stripe = new Stripe('sk_test_unused');
  headers = { 'stripe-signature': stripe.webhooks.generateTestHeaderString({ payload, secret }) };
} else if (vendor === 'github') {
  headers = { 'x-hub-signature-256': await sign(secret, payload) };
} else {
  console.error(`unknown vendor ${vendor}`);
  process.exit(2);
}
console.log(JSON.stringify(headers));
