// Package client is the Go client of tokend, the daemon that holds a company's DingTalk app secrets
// and hands out access tokens and jsapi tickets to internal services.
//
// Create one Client per tokend and client key, and share it:
//
//	tc, err := client.New("http://tokend.internal:8080", os.Getenv("TOKEND_KEY"), nil)
//
// Then either ask for a token and make the DingTalk call yourself:
//
//	tok, err := tc.AccessToken(ctx, "crm")
//	// use tok.Value as ?access_token= (legacy API) or x-acs-dingtalk-access-token (new API)
//
// or let Do supply the token and recover from an invalid one: if the call's error says DingTalk
// rejected the token (see IsInvalidToken), Do reports it to tokend and runs the call once more with
// the replacement.
//
//	err := tc.Do(ctx, "crm", func(ctx context.Context, accessToken string) error {
//		resp, err := callDingTalk(ctx, accessToken)
//		if err != nil {
//			return err
//		}
//		return client.CheckLegacy(resp) // or client.CheckNew(status, body) on api.dingtalk.com
//	})
//
// Tokens and tickets are cached in the Client until Options.RefreshBefore (default 60 s) before they
// expire, so most calls make no request; concurrent callers needing the same uncached token share one
// request. Signature returns a dd.config signature for an H5 page, ready to be JSON-encoded for the
// front-end.
//
// Failures of tokend are *Error values carrying the API's problem code; match them with errors.Is and
// the sentinels (ErrForbidden, ErrUpstreamUnavailable, ...) or with errors.As for the details
// (RetryAfter, UpstreamCode). No error of this package contains the client key or a token.
package client
